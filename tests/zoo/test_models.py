from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cosched import zoo

EXPORTERS = {"dynamo": False, "legacy": True}

# Parameter counts of the reference implementations (torchvision; HuggingFace BertModel).
# googlenet: torchvision's 6,624,904 uses 3x3 where the paper has 5x5; the paper's 5x5 adds
# 16 * sum(reduce * out) = 16 * 23,808 = 380,928 over the nine modules.
PUBLISHED_PARAMS = {
    "resnet50": 25_557_032,
    "inception_v3": 23_834_568,
    "googlenet": 6_624_904 + 380_928,
    "mobilenet_v2": 3_504_872,
    "squeezenet1_1": 1_235_496,
    "bert": 109_482_240,
}


def torch_outputs(name: str, feeds: dict[str, np.ndarray], size: str = "tiny") -> list[np.ndarray]:
    module = zoo.build(name, size)
    args = [torch.from_numpy(feeds[n]) for n in zoo.ZOO[name].input_names(size)]
    with torch.no_grad():
        out = module(*args)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def test_names_are_the_seven_reference_models() -> None:
    assert set(zoo.names()) == {
        "resnet50", "inception_v3", "googlenet", "mobilenet_v2", "squeezenet1_1", "bert", "dlrm",
    }  # fmt: skip
    assert all(zoo.ZOO[n].sizes == zoo.SIZES for n in zoo.names())


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_full_size_matches_published_parameter_count(name: str) -> None:
    assert zoo.ZOO[name].param_count("full") == PUBLISHED_PARAMS[name]


def test_dlrm_full_tables_are_capped_criteo_kaggle() -> None:
    config = zoo.ZOO["dlrm"].config("full")
    assert len(config.table_rows) == 26 and config.dense == 13
    assert max(config.table_rows) == 40_000 and sum(config.table_rows) == 367_398
    weight_bytes = 4 * zoo.ZOO["dlrm"].param_count("full")
    assert weight_bytes < 200e6


@pytest.mark.parametrize("name", zoo.names())
def test_tiny_has_the_topology_of_full(name: str) -> None:
    def kinds(size: str) -> set[str]:
        with torch.device("meta"):
            module = zoo.ZOO[name].make(zoo.ZOO[name].config(size))
        return {type(m).__name__ for m in module.modules()}

    assert kinds("tiny") == kinds("full")
    assert zoo.ZOO[name].param_count("tiny") < zoo.ZOO[name].param_count("full") / 20


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", zoo.names())
def test_tiny_export_checks_and_matches_torch(name: str, exporter: str) -> None:
    path = zoo.export(name, size="tiny", batch=2, legacy=EXPORTERS[exporter])
    onnx.checker.check_model(str(path))
    feeds = zoo.example_inputs(name, "tiny", 2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(zoo.ZOO[name].output_names)
    got = session.run(None, feeds)
    expected = torch_outputs(name, feeds)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
        assert np.std(e) > 1e-3  # not a degenerate, constant output


@pytest.mark.parametrize("name", zoo.names())
def test_builds_are_deterministic_and_leave_global_rng_alone(name: str) -> None:
    rng_before = torch.get_rng_state()
    first = zoo.build(name).state_dict()
    second = zoo.build(name).state_dict()
    assert torch.equal(rng_before, torch.get_rng_state())
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = zoo.build(name, seed=1).state_dict()
    weights = [k for k, v in first.items() if v.is_floating_point()]
    assert weights and not any(torch.equal(first[k], other[k]) for k in weights)


def test_every_weight_is_seeded_non_trivially() -> None:
    state = zoo.build("resnet50").state_dict()
    bn = {k: v for k, v in state.items() if k.endswith(("running_var", "running_mean", "bias"))}
    assert bn and all(torch.unique(v).numel() > 1 for v in bn.values() if v.numel() > 1)


def test_example_inputs_are_deterministic_and_valid() -> None:
    a = zoo.example_inputs("dlrm", "full", 4)
    b = zoo.example_inputs("dlrm", "full", 4)
    assert a.keys() == b.keys() == {"dense_features", "sparse_indices"}
    assert all(np.array_equal(a[k], b[k]) for k in a)
    indices = a["sparse_indices"]
    assert indices.shape == (4, 26, 4) and indices.dtype == np.int64 and indices.min() >= 0
    rows = np.array(zoo.ZOO["dlrm"].config("full").table_rows)
    assert (indices < rows[None, :, None]).all()
    assert indices[:, rows == 40_000].max() > 1_000  # draws span each table, not a common prefix
    assert a["dense_features"].dtype == np.float32 and a["dense_features"].shape == (4, 13)


def test_bert_example_inputs_are_ids_and_prefix_masks() -> None:
    feeds = zoo.example_inputs("bert", "full", 8)
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    assert ids.shape == mask.shape == (8, 128) and ids.dtype == mask.dtype == np.int64
    assert ids.min() >= 0 and ids.max() < 30522
    assert (mask[:, 0] == 1).all() and set(np.unique(mask)) <= {0, 1}
    assert (np.diff(mask, axis=1) <= 0).all()  # ones, then padding
    assert not np.array_equal(zoo.example_inputs("bert", "full", 8, seed=1)["input_ids"], ids)
