"""The fastrnn command: info and bench (on a tiny shape)."""
import json
import subprocess
import sys
import tempfile


def _run(*args):
    # cwd away from the source tree, so the installed package (with its extension) runs
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-m", "fastrnn.cli", *args], capture_output=True, text=True,
                              timeout=300, cwd=cwd)


def test_info_json():
    res = _run("info", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert {"version", "isa", "cuda_compiled", "threads", "torch"} <= set(info)
    assert info["extension"] and info["isa"] in ("generic", "avx2", "avx512", "avx512_256")


def test_bench_table_and_json(tmp_path):
    out = tmp_path / "rows.json"
    res = _run("bench", "--shape", "5,2,3,4", "--cell", "lstm", "gru", "rnn", "--rounds", "3", "--json", str(out))
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith(("lstm", "gru", "rnn"))]
    assert len(lines) == 6  # 3 cells x (infer, train)
    assert "measured float32 FMA peak" in res.stdout
    doc = json.loads(out.read_text())
    assert all(v > 0 for v in doc["fma_peak_gflops"].values())
    rows = doc["rows"]
    assert len(rows) == 6
    for r in rows:
        assert r["torch_ms"] > 0 and r["fastrnn_ms"] > 0 and r["speedup"] > 0 and r["gflops"] > 0
        assert r["mode"] in ("infer", "train")


def test_bench_bad_shape():
    res = _run("bench", "--shape", "5,2,3")
    assert res.returncode == 2 and "T,B,I,H" in res.stderr
