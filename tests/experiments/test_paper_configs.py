"""Every paper-setting config: the paper's hyper-parameters, and its runlocal variant end to end
on synthetic folders / RecordIO packs / .bin files / tiny prepared TFDS directories."""

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

from circle_jax import data as cdata
from circle_jax import training
from experiments import builder
from experiments import train
from tests.data import fake_datasets as fake

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FACE = ["face_circle", "face_am_softmax", "face_arcface", "face_normface", "face_softmax"]
REID = ["reid_circle", "reid_am_softmax"]
FINE = ["fine_grained_circle", "fine_grained_multi_similarity"]

# (config, arg) → the loss and hyper-parameters the paper states (§4.1 and its baselines).
PAPER = {
    "face_circle": ("circle_class", {"gamma": 256.0, "margin": 0.25}),
    "face_am_softmax": ("am_softmax", {"gamma": 64.0, "margin": 0.35}),
    "face_arcface": ("arcface", {"gamma": 64.0, "margin": 0.5}),
    "face_normface": ("normface", {"gamma": 64.0}),
    "face_softmax": ("softmax", {}),
    "reid_circle": ("circle_class", {"gamma": 128.0, "margin": 0.25}),
    "reid_am_softmax": ("am_softmax", {"gamma": 64.0, "margin": 0.35}),
    "fine_grained_circle": ("circle_pair", {"gamma": 80.0, "margin": 0.4}),
    "fine_grained_multi_similarity": ("multi_similarity", {"alpha": 2.0, "beta": 50.0, "base": 0.5}),
}
VARIANTS = {"face": ("r34", "r100"), "reid": ("market1501", "msmt17"),
            "fine": ("cub200", "cars196", "sop")}


def _config(name, arg):
  return importlib.import_module(f"experiments.configs.{name}").get_config(arg)


def _kind(name):
  return "face" if name in FACE else "reid" if name in REID else "fine"


@pytest.mark.parametrize("name", FACE + REID + FINE)
def test_full_configs_have_the_papers_settings(name):
  loss, hparams = PAPER[name]
  for variant in VARIANTS[_kind(name)]:
    c = _config(name, variant)
    builder.build(c, data=False)
    assert c.loss.name == loss
    for k, v in hparams.items():
      assert c.loss[k] == v, (name, k)
    assert c.model.embedding_dim == 512
    if name in FACE:
      assert c.model.name == {"r34": "resnet34", "r100": "face_resnet100"}[variant]
      assert (c.num_steps, c.optimizer.learning_rate, c.optimizer.schedule) == (182_000, 0.1, "step")
      assert tuple(c.data.image_size) == (112, 112)
    elif name in REID:
      assert c.model.name == "resnet50" and c.data.name == variant
      assert tuple(c.evals.reid.ranks) == (1, 5, 10)
    else:
      assert (c.batch.classes_per_batch, c.batch.images_per_class) == (16, 5)
      assert tuple(c.evals.retrieval.ks) == ((1, 10, 100, 1000) if variant == "sop" else (1, 2, 4, 8))
      assert c.data.download is False
  with pytest.raises(ValueError, match="local"):
    _config(name, "nonsense")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  root = tmp_path_factory.mktemp("paper_data")
  fake.write_market1501(str(root / "market"), train_ids=(1, 2, 3, 4, 5), test_ids=(6, 7, 8))
  fake.write_msmt17(str(root / "msmt"))
  fake.write_recordio_pack(str(root / "pack"), [5, 6, 4, 5, 6])
  fake.write_identity_folders(str(root / "folders"), [4, 5, 4, 5])
  os.makedirs(root / "bins")
  for name in ("lfw", "cfp_fp"):
    fake.write_verification_bin(str(root / "bins" / f"{name}.bin"), 20)
  fake.write_ijb(str(root / "ijbc"))
  return root


def _local(name, arg, **overrides):
  c = _config(name, arg)
  c.num_devices = 1
  c.num_steps = 4
  c.checkpoint_every = 4
  c.update_from_flattened_dict(overrides)
  return c


def _check_log(workdir, keys):
  records = training.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  losses = [r["loss"] for r in records if "loss" in r]
  assert losses and all(np.isfinite(losses))
  assert records[-1]["event"] == "eval"
  for k in keys:
    assert k in records[-1], k


# Two face configs run end to end, one on each data format; the other three face losses run
# on the same protocol as the members of one ablation program (test_runlocal_configs_…).
@pytest.mark.slow
@pytest.mark.parametrize("name", FACE[:2])
def test_face_runlocal_end_to_end(name, synthetic, tmp_path):
  # One reads the RecordIO pack, the other the identity folders.
  data_name = "face_recordio" if FACE.index(name) % 2 == 0 else "face_folders"
  c = _local(name, "local", **{
      "data.name": data_name,
      "data.path": str(synthetic / ("pack" if data_name == "face_recordio" else "folders")),
      "data.val_path": str(synthetic / "bins"), "data.val_sets": ("lfw", "cfp_fp")})
  if name == "face_circle":  # one run also evaluates IJB-C-style template pairs
    c.data.ijb_path = str(synthetic / "ijbc")
    c.evals.tar_at_far.fars = (0.1, 0.5)
  r = train.train_and_evaluate(c, str(tmp_path))
  for s in ("lfw", "cfp_fp"):
    v = r["verification"][s]
    assert 0 <= v["accuracy"] <= 1 and len(v["fold_accuracies"]) == 10
  _check_log(str(tmp_path), ["lfw_accuracy", "cfp_fp_accuracy"])
  if name == "face_circle":
    assert set(r["tar_at_far"]) == {0.1, 0.5}
    assert all(0 <= v <= 1 for v in r["tar_at_far"].values())
    _check_log(str(tmp_path), ["tar@far=0.1"])


@pytest.mark.slow
@pytest.mark.parametrize("name, variant", [("reid_circle", "market1501"),
                                           ("reid_am_softmax", "msmt17")])
def test_reid_runlocal_end_to_end(name, variant, synthetic, tmp_path):
  c = _local(name, f"{variant},local",
             **{"data.path": str(synthetic / ("market" if variant == "market1501" else "msmt"))})
  r = train.train_and_evaluate(c, str(tmp_path))
  assert r["num_queries"] > 0 and 0 <= r["map"] <= 1
  assert set(r["cmc"]) == {1, 5, 10} and r["cmc"][1] <= r["cmc"][5] <= r["cmc"][10]
  _check_log(str(tmp_path), ["cmc@1", "map"])


@pytest.mark.slow
@pytest.mark.parametrize("name, variant", [("fine_grained_circle", "cub200"),
                                           ("fine_grained_multi_similarity", "sop")])
def test_fine_grained_runlocal_end_to_end_on_mock_tfds(name, variant, tmp_path):
  # A tiny set prepared by TFDS as ArrayRecord (the synthetic builder of
  # fake_datasets), read and decoded without TensorFlow in 2 grain workers.
  pytest.importorskip("tensorflow_datasets")
  if variant == "sop":
    labels = {"train": np.repeat(np.arange(6), 5), "test": np.repeat(np.arange(6, 12), 5)}
    path = fake.write_tfds(tmp_path / "tfds", "stanford_online_products", labels, sizes=(20, 12))
  else:
    labels = {"train": np.repeat(np.arange(6), 5), "test": np.repeat(np.arange(100, 106), 5)}
    path = fake.write_tfds(tmp_path / "tfds", "caltech_birds2011", labels, sizes=(20, 12))
  c = _local(name, f"{variant},local",
             **{"data.crop_to_bbox": variant == "cub200", "data.path": path})
  if variant == "sop":  # SOP's R@100 and R@1000 need more than the 30 test images
    with pytest.raises(builder.ConfigError,
                       match=r"config.evals.retrieval.ks: k = 1000 ≥ the 30 test images"):
      builder.build(c)
    c.evals.retrieval.ks = (1, 10)
  r = train.train_and_evaluate(c, str(tmp_path / "run"))
  ks = (1, 10) if variant == "sop" else (1, 2, 4, 8)
  assert tuple(r["recall"]) == ks and all(0 <= v <= 1 for v in r["recall"].values())
  _check_log(str(tmp_path / "run"), ["recall@1"])


def test_missing_data_errors_say_where_and_how(tmp_path):
  c = _local("reid_circle", "market1501,local", **{"data.path": str(tmp_path / "nowhere")})
  with pytest.raises(cdata.DatasetNotFoundError, match=r"nowhere.*To prepare it: unpack"):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  c = _local("face_circle", "local")
  with pytest.raises(cdata.DatasetNotFoundError, match=r"empty path.*train.rec"):
    train.train_and_evaluate(c, str(tmp_path / "run"))


def test_command_line_with_a_config_arg_reports_missing_data(tmp_path):
  cmd = [sys.executable, "-m", "experiments.main",
         "--config", "experiments/configs/reid_circle.py:msmt17,local",
         "--workdir", str(tmp_path), f"--config.data.path={tmp_path / 'MSMT17'}"]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert "error: msmt17: no data at" in out.stderr and "list_train.txt" in out.stderr
  assert "Traceback" not in out.stderr


def test_unknown_dataset_name_is_a_config_error():
  c = _config("reid_circle", "local")
  c.data.name = "market"
  with pytest.raises(builder.ConfigError, match=r"config.data.name: unknown dataset 'market'"):
    builder.build(c, data=False)


def _copy(src, dst):
  import shutil
  shutil.copytree(src, dst)
  return dst


def _fails_before_training(c, workdir, error, match):
  with pytest.raises(error, match=match):
    train.train_and_evaluate(c, str(workdir))
  # Nothing was trained: no checkpoint, no metrics line.
  assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def _face(synthetic, bins):
  return _local("face_circle", "local", **{
      "data.name": "face_recordio", "data.path": str(synthetic / "pack"),
      "data.val_path": str(bins), "data.val_sets": ("lfw", "cfp_fp")})


def test_face_evaluation_sets_are_checked_before_training(synthetic, tmp_path):
  bins = _copy(synthetic / "bins", tmp_path / "bins")
  os.remove(bins / "cfp_fp.bin")
  _fails_before_training(_face(synthetic, bins), tmp_path / "missing",
                         cdata.DatasetNotFoundError, r"cfp_fp.bin")
  (bins / "cfp_fp.bin").write_bytes(b"not a pickle at all")
  _fails_before_training(_face(synthetic, bins), tmp_path / "garbage", cdata.DatasetError,
                         r"cfp_fp.bin: not a pickled verification set")
  import pickle
  (bins / "cfp_fp.bin").write_bytes(pickle.dumps(([b"\x89PNG junk", b"junk"], [True])))
  _fails_before_training(_face(synthetic, bins), tmp_path / "image", cdata.DatasetError,
                         r"cfp_fp.bin: image 0: decode_image: not a readable image")


@pytest.mark.parametrize("folder, role", [("query", "query"), ("bounding_box_train", "train"),
                                          ("bounding_box_test", "gallery")])
def test_empty_reid_folders_are_named_before_training(synthetic, tmp_path, folder, role):
  market = _copy(synthetic / "market", tmp_path / "market")
  for f in os.listdir(market / folder):
    os.remove(market / folder / f)
  c = _local("reid_circle", "market1501,local", **{"data.path": str(market)})
  _fails_before_training(c, tmp_path / "run", cdata.DatasetError,
                         rf"{folder}: no {role} images")


def test_unreadable_reid_image_is_named_before_training(synthetic, tmp_path):
  market = _copy(synthetic / "market", tmp_path / "market")
  first = sorted(f for f in os.listdir(market / "query") if f.endswith(".jpg"))[0]
  (market / "query" / first).write_bytes(b"garbage")
  c = _local("reid_circle", "market1501,local", **{"data.path": str(market)})
  _fails_before_training(c, tmp_path / "run", cdata.DatasetError,
                         rf"the first query image does not decode: load_image: .*{first}")


def _ablation_grid(c, tmp_path, **axes):
  """The runlocal config as a small ablation grid (one program, no sequential runs)."""
  from experiments import grid  # pylint: disable=g-import-not-at-top
  c.num_steps, c.log_every = 3, 3
  c.ablation.members = "unroll"
  # Decoded in this process: the end-to-end tests above cover the grain worker processes.
  if "num_workers" in c.data:
    c.data.num_workers = 0
  for k, v in axes.items():
    c.ablation[k] = v
  return grid.run(c, str(tmp_path), sequential=False, say=lambda *a, **k: None)


@pytest.mark.slow
def test_runlocal_configs_run_as_ablation_grids(synthetic, tmp_path):
  # Re-ID over two margins, class-level Circle with the re-ID evaluator (CMC, mAP).
  c = _local("reid_circle", "market1501,local", **{"data.path": str(synthetic / "market")})
  record = _ablation_grid(c, tmp_path / "reid", margins=(0.1, 0.25))
  assert [m["hparams"]["margin"] for m in record["members"]] == [0.1, 0.25]
  for r in record["metrics"]:
    assert 0 <= r["map"] <= 1 and r["cmc@1"] <= r["cmc@5"] <= r["cmc@10"]
  assert len({round(v, 6) for v in record["final_loss"]}) == 2   # the margins trained apart
  # The face losses that test_face_runlocal_end_to_end leaves out, as the members of one
  # program on the face protocol: verification on the .bin sets per member.
  c = _local("face_arcface", "local", **{
      "data.name": "face_folders", "data.path": str(synthetic / "folders"),
      "data.val_path": str(synthetic / "bins"), "data.val_sets": ("lfw", "cfp_fp")})
  losses = tuple(PAPER[n][0] for n in FACE[2:])
  record = _ablation_grid(c, tmp_path / "face", losses=losses)
  assert tuple(m["loss"] for m in record["members"]) == losses == ("arcface", "normface", "softmax")
  assert record["members"][0]["hparams"] == PAPER["face_arcface"][1]
  for r in record["metrics"]:
    assert 0 <= r["lfw_accuracy"] <= 1 and 0 <= r["cfp_fp_accuracy"] <= 1
  assert all(np.isfinite(record["final_loss"]))


@pytest.mark.slow
def test_fine_grained_runlocal_config_runs_as_an_ablation_grid(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  labels = {"train": np.repeat(np.arange(6), 5), "test": np.repeat(np.arange(100, 106), 5)}
  path = fake.write_tfds(tmp_path / "tfds", "caltech_birds2011", labels, sizes=(20, 12))
  c = _local("fine_grained_circle", "cub200,local",
             **{"data.crop_to_bbox": True, "data.path": path})
  record = _ablation_grid(c, tmp_path / "grid", gammas=(32.0, 80.0))
  assert [m["hparams"]["gamma"] for m in record["members"]] == [32.0, 80.0]
  assert all(0 <= r["recall@1"] <= r["recall@8"] <= 1 for r in record["metrics"])
