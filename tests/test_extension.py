"""The compiled core: torch-free linkage, ISA report, info()."""
import shutil
import subprocess

import pytest
import torch

import fastrnn
from fastrnn import _backend


def test_extension_loaded():
    assert _backend.available()
    info = fastrnn.info()
    assert info["extension"] and info["isa"] in ("generic", "avx2", "avx512", "avx512_256")
    assert info["version"] == fastrnn.__version__
    assert info["torch"] == torch.__version__


@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf not installed")
def test_extension_does_not_link_torch():
    path = _backend._C.__file__
    dyn = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
    needed = [line for line in dyn.splitlines() if "NEEDED" in line]
    assert needed, dyn
    for line in needed:
        assert "torch" not in line and "c10" not in line, line


def test_extension_has_no_torch_symbols():
    with open(_backend._C.__file__, "rb") as f:
        blob = f.read()
    assert b"libtorch" not in blob and b"libc10" not in blob
    assert b"_ZN3c10" not in blob and b"_ZN2at" not in blob  # no c10:: / at:: symbol references


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512", "avx512_256"])
def test_every_isa_matches(isa, tmp_path):
    """Force each ISA the CPU supports in a subprocess and check parity there."""
    code = (
        "import torch, fastrnn\n"
        "torch.manual_seed(0)\n"
        "for m,(ct,cf) in {'LSTM':(torch.nn.LSTM,fastrnn.LSTM),'GRU':(torch.nn.GRU,fastrnn.GRU),'RNN':(torch.nn.RNN,fastrnn.RNN)}.items():\n"
        "  t=ct(5,19,bidirectional=True); f=cf(5,19,bidirectional=True); f.load_state_dict(t.state_dict())\n"
        "  x=torch.randn(4,7,5,requires_grad=True)\n"
        "  a=t(x)[0]; b=f(x)[0]\n"
        "  torch.testing.assert_close(b,a,atol=2e-5,rtol=1e-4)\n"
        "  ga=torch.autograd.grad(a.sum(),x)[0]; gb=torch.autograd.grad(b.sum(),x)[0]\n"
        "  torch.testing.assert_close(gb,ga,atol=2e-5,rtol=1e-4)\n"
        # wider layers on 2 threads (several panels per thread, the fused step projection, the
        # weight gradients), a projection, and float64
        "torch.set_num_threads(2)\n"
        "for kw,dt in [(dict(hidden_size=150,num_layers=2),torch.float32),(dict(hidden_size=70,proj_size=23),torch.float32),\n"
        "              (dict(hidden_size=33,bidirectional=True),torch.float64)]:\n"
        "  for ct,cf in [(torch.nn.LSTM,fastrnn.LSTM),(torch.nn.GRU,fastrnn.GRU),(torch.nn.RNN,fastrnn.RNN)]:\n"
        "    if 'proj_size' in kw and ct is not torch.nn.LSTM: continue\n"
        "    t=ct(40,dtype=dt,**kw); f=cf(40,dtype=dt,**kw); f.load_state_dict(t.state_dict())\n"
        "    x=torch.randn(9,16,40,dtype=dt)\n"
        "    a=t(x)[0]; b=f(x)[0]\n"
        "    torch.testing.assert_close(b,a,atol=2e-5,rtol=1e-4)\n"
        "    ga=torch.autograd.grad(a.square().sum(),list(t.parameters())); gb=torch.autograd.grad(b.square().sum(),list(f.parameters()))\n"
        "    for u,v in zip(gb,ga): torch.testing.assert_close(u,v,atol=1e-4,rtol=1e-4)\n"
        "print(fastrnn.info()['isa'])\n"
    )
    import os
    import sys

    env = dict(os.environ, FASTRNN_ISA=isa)
    # cwd away from the source tree: the installed package (with its extension) is tested
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    picked = res.stdout.strip().splitlines()[-1]
    assert picked in ("generic", "avx2", "avx512", "avx512_256"), res.stdout
    if picked != isa:
        pytest.skip(f"this CPU cannot run {isa} (picked {picked})")
