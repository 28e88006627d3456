"""Bad input to `lens export` and broken model folders: one clear line, exit code 2, nothing lost."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import lens
from lens.errors import LensError


def _one_line_error(rc, err, *fragments):
    assert rc == 2, err
    lines = [l for l in err.strip().splitlines() if l.startswith("lens: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], lines[0]


def test_unsupported_architecture_is_refused(cli, tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "bert")
    rc, out, err = cli("export", tmp_path / "bert", "--models-dir", tmp_path / "m")
    _one_line_error(rc, err, "'bert' is an encoder model", "decoder-only")
    assert not any((tmp_path / "m").iterdir())


def test_folder_without_weights(cli, tiny, tmp_path):
    (tmp_path / "noweights").mkdir()
    shutil.copy(tiny[0] / "config.json", tmp_path / "noweights")
    rc, out, err = cli("export", tmp_path / "noweights", "--models-dir", tmp_path / "m")
    _one_line_error(rc, err, "has no weights")


def test_folder_without_config(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    rc, out, err = cli("export", tmp_path / "empty", "--models-dir", tmp_path / "m")
    _one_line_error(rc, err, "no config.json")


def test_no_network(cli, tmp_path):
    rc, out, err = cli("export", "distilgpt2", "--models-dir", tmp_path / "m",
                       env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    _one_line_error(rc, err, "distilgpt2", "unreachable")


def test_unknown_hub_id(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.utils import RepositoryNotFoundError

    def not_found(*a, **k):
        raise RepositoryNotFoundError("404 Client Error", response=None)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_found)
    from lens.export import export_model
    with pytest.raises(LensError, match="unknown model 'nobody/no-such-model'"):
        export_model("nobody/no-such-model", models_dir=tmp_path)


def test_unwritable_target(cli, tiny, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rc, out, err = cli("export", tiny[0], "--models-dir", blocker / "models")
    _one_line_error(rc, err, "cannot write to")


def test_existing_export_is_reused_unless_forced(cli, tiny, tmp_path):
    store = tmp_path / "m"
    shutil.copytree(tiny[1], store / "tiny")
    before = (store / "tiny" / "manifest.json").stat().st_mtime_ns
    rc, out, err = cli("export", tiny[0], "--models-dir", store)
    assert rc == 0 and "reusing" in err and out.strip() == str(store / "tiny")
    assert (store / "tiny" / "manifest.json").stat().st_mtime_ns == before
    rc, out, err = cli("export", tiny[0], "--models-dir", store, "--force", "--no-validate")
    assert rc == 0 and (store / "tiny" / "manifest.json").stat().st_mtime_ns != before
    assert sorted(p.name for p in store.iterdir()) == ["tiny"]  # no temporary or old folder left


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_export_leaves_nothing(tiny, tmp_path, sig):
    store = tmp_path / "m"
    p = subprocess.Popen([sys.executable, "-m", "lens.cli", "export", str(tiny[0]), "--models-dir", str(store)],
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:  # interrupt in the middle of the optimum export
        if "[2/6]" in line:
            time.sleep(1.0)
            p.send_signal(sig)
            break
    rest = p.stderr.read()
    rc = p.wait(timeout=120)
    assert rc == 130, rest
    assert "Traceback" not in rest
    assert list(store.iterdir()) == []


@pytest.fixture
def broken_copy(tiny, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny[1], dst)
    return dst


def _load_error(folder, *fragments):
    with pytest.raises(lens.ModelFolderError) as e:
        lens.load(folder)
    for f in fragments:
        assert f in str(e.value)


def test_missing_manifest(broken_copy):
    (broken_copy / "manifest.json").unlink()
    _load_error(broken_copy, "no manifest.json", "--force")


def test_corrupt_manifest(broken_copy):
    (broken_copy / "manifest.json").write_text('{"format": 1, "files": ')
    _load_error(broken_copy, "manifest.json is corrupt")


def test_truncated_graph(broken_copy):
    with open(broken_copy / "model.onnx", "r+b") as f:
        f.truncate(1000)
    _load_error(broken_copy, "model.onnx has 1000 bytes")


def test_missing_weights(broken_copy):
    (broken_copy / "model.safetensors").unlink()
    _load_error(broken_copy, "model.safetensors is missing")


def test_same_size_corruption_is_caught_by_sha256(broken_copy):
    lens.load(broken_copy)  # verified once: the stamp now caches the hashes
    path = broken_copy / "tokenizer.json"
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    st = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    _load_error(broken_copy, "tokenizer.json does not match its sha256")


def test_unknown_model_name(tmp_path):
    with pytest.raises(lens.ModelFolderError, match="not exported .* run `lens export gpt2-xl`"):
        lens.load("gpt2-xl", models_dir=tmp_path)


def test_prompt_errors(tiny_model):
    with pytest.raises(LensError, match="prompt is empty"):
        tiny_model.generate("", 5)
    with pytest.raises(LensError, match="exceeds the model's context of 128"):
        tiny_model.generate("hello " * 120, 20)
    with pytest.raises(LensError, match="temperature"):
        tiny_model.generate("hello", 5, sample=True, temperature=0)
    with pytest.raises(LensError, match="temperature"):
        tiny_model.generate("hello", 5, sample=True, temperature=float("inf"))
    with pytest.raises(LensError, match="is 2 tokens"):
        tiny_model.token_id(" 1564")


def test_runtime_imports_without_torch(tiny):
    code = ("import sys\n"
            "for m in ('torch', 'transformers', 'optimum'): sys.modules[m] = None\n"
            "import lens\n"
            f"m = lens.load({str(tiny[1])!r})\n"
            "print(m.generate('Hello', 4).token_ids.tolist())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    want = list(lens.load(tiny[1]).generate("Hello", 4).token_ids)
    assert json.loads(out.stdout) == [int(i) for i in want]


def test_model_names():
    from lens.store import model_name

    assert model_name("microsoft/DialoGPT-small") == "DialoGPT-small"
    assert model_name("some/dir/SmolLM2-135M-Instruct.Q4_1.gguf") == "SmolLM2-135M-Instruct.Q4_1"
