"""`lens export --dtype float16`: the graph's weights, activations and KV cache in half precision, the
JAX port reading the half weights, every engine checked against the float32 PyTorch model at
half-precision tolerance; and the per-position error that makes such a check mean something."""
from __future__ import annotations

import json

import numpy as np
import pytest

import lens
from conftest import run_cli
from lens.export.validate import position_error, relative_error, torch_taps
from lens.testing import build_and_export
from references import torch_reference

PROMPT = "William Shakespeare was born in the year"
KINDS = ("gpt2", "llama", "gemma3", "phi3")  # learned positions; RoPE + GQA; sqrt(d) embedding, 1 + w norms; fused
HALF = 1e-2  # per position, relative to its scale: what float16 (11 significant bits) keeps over two blocks


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root, cache = tmp_path_factory.mktemp("half"), {}

    def get(kind):
        if kind not in cache:
            cache[kind] = build_and_export(root / kind, kind, family=kind, init=0.2, dtype="float16")
        return cache[kind]
    return get


def _torch(src):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(src, attn_implementation="eager", dtype="float32").eval()


@pytest.mark.parametrize("kind", KINDS)
def test_half_export_is_half_and_equals_pytorch(kind, exported):
    src, folder = exported(kind)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["dtype"] == "float16" and manifest["validation"]["position_tolerance"] == 5e-2
    assert {w["dtype"] for w in manifest["weights"].values()} == {"<f2"}   # every weight stored in half
    assert [m["dtype"] for m in lens.store.list_models(folder.parent)] == ["float16"]   # `lens list` says so
    explainer = lens.Explainer.load(folder)
    model = explainer.model
    past = {i.name: i.type for i in model.session.get_inputs() if i.name.startswith("past_key_values")}
    assert set(past.values()) == {"tensor(float16)"}

    # a full pass and a KV-cached step: logits and every tap, against float32 PyTorch
    reference = _torch(src)
    ids = model.encode(PROMPT)
    ref, ours = torch_taps(reference, np.asarray(ids)[None]), model.session_run(ids, taps=True)
    assert ours["present"][0].dtype == np.float16
    for key in ["logits", *model.taps]:
        assert ours[key].dtype == np.float32                                  # handed out as float32
        assert position_error(ours[key], ref[key]) <= HALF, key
    step = model.session_run(ids[-1:], past=model.session_run(ids[:-1])["present"], taps=True)
    for key in ["logits", *model.taps]:
        assert position_error(step[key][:, -1:], ref[key][:, -1:]) <= HALF, key

    # attributions: the JAX port over the half weights against torch autograd on the float32 model
    expl = explainer.explain(PROMPT, max_new_tokens=4, methods=("grad_x_input",))
    assert explainer.attributor.params["W_E"].dtype == np.float16
    scores, _, _ = torch_reference(reference, expl.token_ids, expl.n_prompt, "grad_x_input")
    np.testing.assert_allclose(expl.attributions["grad_x_input"], scores, atol=5e-3)


def test_per_position_error_sees_past_an_attention_sink():
    """A sink position 10,000x the others' scale hid a 10% error everywhere else (float16 tap matching
    picked the residual stream before the MLP for the one after it)."""
    want = np.ones((1, 6, 8), np.float32)
    want[0, 0] = 20_000.0
    got = want.copy()
    got[0, 1:] *= 1.1
    assert position_error(got, want) == pytest.approx(0.1, rel=1e-5)
    assert relative_error(got, want) < 1e-4 and position_error(want, want) == 0


def test_bfloat16_is_refused_before_any_work(tmp_path):
    code, out, err = run_cli("export", "no/such-model", "--dtype", "bfloat16", "--models-dir", tmp_path)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "bfloat16" in err and "float16" in err
    assert list(tmp_path.iterdir()) == []


def test_a_manifest_claiming_another_dtype_is_refused(exported, tmp_path):
    import shutil

    _, folder = exported("gpt2")
    copy = tmp_path / "m"
    shutil.copytree(folder, copy)
    m = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(dict(m, dtype="int4")))
    with pytest.raises(lens.LensError, match="dtype is 'int4'"):
        lens.load(copy)


def test_an_export_of_another_precision_is_never_reused(exported, tmp_path):
    """`lens export X --dtype float16` where a float32 X is stored must not hand back the float32 one."""
    import shutil

    src, folder = exported("gpt2")                                    # float16
    store = tmp_path / "store"
    shutil.copytree(folder, store / "tiny")
    with pytest.raises(lens.LensError, match="holds a float16 export, not float32"):
        lens.export.export_model(str(src), models_dir=store, name="tiny")
    with pytest.raises(lens.LensError, match="not float16 with attention taps"):
        lens.export.export_model(str(src), models_dir=store, name="tiny", dtype="float16", attention_taps=True)
    assert lens.export.export_model(str(src), models_dir=store, name="tiny", dtype="float16") == store / "tiny"
