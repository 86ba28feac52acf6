"""OpenKBP conversion: synthetic patients for the exact mapping and errors, real patients for anatomy and HU."""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ipnp.cli import main
from ipnp.data.convert.openkbp import convert_openkbp
from ipnp.data.dataset import PartialDataset
from ipnp.data.labels import OPENKBP_ORGANS
from ipnp.errors import IpnpError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "openkbp"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"OpenKBP data not found at {DATA}")
ID = {name: i for i, name in OPENKBP_ORGANS.items()}
N = 128


def flat(a0: int, a1: int, a2: int) -> int:
    return int(np.ravel_multi_index((a0, a1, a2), (N, N, N)))


def write_csv(path: Path, text: str) -> None:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


def write_patient(
    folder: Path, ct: dict[int, float], organs: dict[str, list[int]], spacing=(1.5, 1.5, 3.0), ext: str = ".csv"
) -> None:
    folder.mkdir(parents=True)
    write_csv(folder / f"ct{ext}", ",data\n" + "".join(f"{i},{v}\n" for i, v in ct.items()))
    write_csv(folder / f"voxel_dimensions{ext}", "".join(f"{s:.18e}\n" for s in spacing))
    for name, index in organs.items():
        write_csv(folder / f"{name}{ext}", ",data\n" + "".join(f"{i},\n" for i in index))


def read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def sha256_tree(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# --- synthetic patients -------------------------------------------------------------------------------


def test_voxels_land_where_the_axis_convention_says(tmp_path):
    # a0 anterior->posterior, a1 right->left, a2 superior->inferior  =>  array[127 - a2, a0, a1] in LPS.
    a = (10, 20, 30)
    ct = {flat(*a): 1064.0, flat(0, 0, 0): 30000.0, flat(1, 1, 1): 1.0}
    write_patient(tmp_path / "src/train-pats/pt_1", ct, {"Mandible": [flat(*a)]}, spacing=(2.0, 2.5, 3.0))
    out = convert_openkbp(tmp_path / "src", tmp_path / "out")

    hu, image = read(out / "imagesTr/pt_1_0000.nii.gz")
    labels, _ = read(out / "labelsTr/pt_1.nii.gz")
    assert hu.dtype == np.int16 and hu.shape == (N, N, N)
    assert hu[N - 1 - 30, 10, 20] == 40
    assert hu[N - 1, 0, 0] == 3071, "metal is clipped to the 12-bit range"
    assert hu[N - 2, 1, 1] == -1023
    assert (hu == -1024).sum() == N**3 - 3, "unlisted voxels are air"
    assert np.argwhere(labels).tolist() == [[N - 1 - 30, 10, 20]] and labels[N - 1 - 30, 10, 20] == ID["Mandible"]
    assert image.GetSpacing() == pytest.approx((2.5, 2.0, 3.0))
    assert image.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)


def test_smaller_structure_wins_overlaps(tmp_path):
    shared, tie = flat(5, 5, 5), flat(9, 9, 9)
    organs = {
        "SpinalCord": [shared, flat(5, 5, 6), flat(5, 5, 7)],
        "Brainstem": [shared, flat(5, 5, 4)],
        "Larynx": [tie, flat(9, 9, 8)],
        "Esophagus": [tie, flat(9, 9, 10)],
    }
    write_patient(tmp_path / "src/train-pats/pt_1", {flat(1, 1, 1): 1000.0}, organs)
    labels, _ = read(convert_openkbp(tmp_path / "src", tmp_path / "out") / "labelsTr/pt_1.nii.gz")
    assert labels[N - 1 - 5, 5, 5] == ID["Brainstem"]
    assert labels[N - 1 - 9, 9, 9] == ID["Esophagus"], "equal sizes: the lower id wins"
    assert labels[N - 1 - 6, 5, 5] == ID["SpinalCord"]


def test_patient_without_ct_is_skipped_with_a_warning(tmp_path, caplog):
    write_patient(tmp_path / "src/train-pats/pt_1", {flat(1, 1, 1): 1000.0}, {"Larynx": [flat(1, 1, 1)]})
    (tmp_path / "src/train-pats/pt_2").mkdir()
    (tmp_path / "src/train-pats/pt_2/Larynx.csv").write_text(",data\n5,\n")
    with caplog.at_level(logging.WARNING):
        out = convert_openkbp(tmp_path / "src", tmp_path / "out")
    assert any("pt_2" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert PartialDataset(out).training_ids == ["pt_1"]


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("ct.csv", ",data\n12,1000.0\nabc,5\n", "malformed CSV"),
        ("ct.csv", ",data\n12,1000.0\n2097152,5\n", "voxel indices"),
        ("ct.csv", "index,value\n12,1000.0\n", "header"),
        ("Larynx.csv", ",data\n1.5,\n", "voxel indices"),
        ("voxel_dimensions.csv", "3.9\n3.9\n", "three positive voxel sizes"),
    ],
)
def test_malformed_file_is_named_in_the_error(tmp_path, capsys, name, content, problem):
    patient = tmp_path / "src/train-pats/pt_1"
    write_patient(patient, {flat(1, 1, 1): 1000.0}, {"Larynx": [flat(1, 1, 1)]})
    (patient / name).write_text(content)
    with pytest.raises(IpnpError, match=problem) as info:
        convert_openkbp(tmp_path / "src", tmp_path / "out")
    assert str(patient / name) in str(info.value) and "\n" not in str(info.value)

    assert main(["convert", "openkbp", str(tmp_path / "src"), str(tmp_path / "out")]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("ipnp: error: ")]
    assert len(errors) == 1 and str(patient / name) in errors[0]
    assert not (tmp_path / "out").exists()


def test_missing_split_and_duplicate_ct_are_errors(tmp_path):
    with pytest.raises(IpnpError, match="split folder not found"):
        convert_openkbp(tmp_path, tmp_path / "out")
    patient = tmp_path / "src/train-pats/pt_1"
    write_patient(patient, {flat(1, 1, 1): 1000.0}, {})
    write_csv(patient / "ct.csv.gz", ",data\n1,1000.0\n")
    with pytest.raises(IpnpError, match="both ct.csv and ct.csv.gz"):
        convert_openkbp(tmp_path / "src", tmp_path / "out")


# --- real patients ------------------------------------------------------------------------------------

TRAIN = ("pt_1", "pt_10", "pt_100")
PLAIN = "pt_1"
TEST = "pt_201"


def copy_patient(src: Path, dest: Path, plain: bool = False) -> None:
    dest.mkdir(parents=True)
    for f in src.iterdir():
        if plain:
            (dest / f.name.removesuffix(".gz")).write_bytes(gzip.decompress(f.read_bytes()))
        else:
            shutil.copyfile(f, dest / f.name)


def truth(folder: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The OAR index sets and voxel sizes of an original patient folder, read independently of ipnp."""
    organs = {}
    for name in OPENKBP_ORGANS.values():
        files = list(folder.glob(f"{name}.csv*"))
        if files:
            organs[name] = np.loadtxt(files[0], delimiter=",", skiprows=1, usecols=0, ndmin=1).astype(int)
    return organs, np.loadtxt(next(folder.glob("voxel_dimensions.csv*")))


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("openkbp")
    src = root / "provided-data"
    for pt in TRAIN:
        copy_patient(DATA / "train-pats" / pt, src / "train-pats" / pt, plain=pt == PLAIN)
    (src / "train-pats/pt_999").mkdir()
    shutil.copyfile(DATA / "train-pats/pt_1/voxel_dimensions.csv.gz", src / "train-pats/pt_999/voxel_dimensions.csv.gz")
    copy_patient(DATA / "validation-pats" / TEST, src / "validation-pats" / TEST)
    gz_src = root / "gz-only"
    copy_patient(DATA / "train-pats" / PLAIN, gz_src / "train-pats" / PLAIN)

    before = sha256_tree(src)
    out = convert_openkbp(src, root / "out", split="train-pats", test_split="validation-pats")
    after = sha256_tree(src)
    gz_out = convert_openkbp(gz_src, root / "gz-out")
    return {"src": src, "out": out, "gz_out": gz_out, "hashes": (before, after), "root": root}


def physical_centroid(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    z, y, x = np.nonzero(mask)
    return np.array(image.TransformContinuousIndexToPhysicalPoint((x.mean(), y.mean(), z.mean())))


@needs_data
def test_layout_manifest_and_dataset(real):
    out = real["out"]
    ds = PartialDataset(out)
    assert ds.training_ids == sorted(TRAIN) and ds.test_ids == [TEST]
    assert ds.organ_names == OPENKBP_ORGANS
    assert ds.dataset_json["numTraining"] == len(TRAIN)
    for pt, split in [*((p, "train-pats") for p in TRAIN), (TEST, "validation-pats")]:
        organs, _ = truth(DATA / split / pt)
        assert ds.manifest[pt] == {ID[n] for n in organs}, pt
        if split == "train-pats":
            assert ds.unknown_organs(pt) == set(OPENKBP_ORGANS) - {ID[n] for n in organs}
        folder = "labelsTr" if split == "train-pats" else "labelsTs"
        labels, _ = read(out / folder / f"{pt}.nii.gz")
        assert set(np.unique(labels)) - {0} <= ds.manifest[pt]
    assert ds.unknown_organs("pt_1") == {ID["Esophagus"], ID["Larynx"]}
    assert ds.manifest["pt_100"] == set(OPENKBP_ORGANS)


@needs_data
def test_anatomy_in_physical_coordinates(real):
    checked = set()
    for folder, pt in [*(("imagesTr", p) for p in TRAIN), ("imagesTs", TEST)]:
        labels, image = read(real["out"] / folder.replace("images", "labels") / f"{pt}.nii.gz")
        c = {n: physical_centroid(image, labels == i) for n, i in ID.items() if (labels == i).any()}
        if {"Mandible", "Larynx"} <= c.keys():
            assert c["Mandible"][1] < c["Larynx"][1], f"{pt}: mandible anterior (smaller LPS y) to larynx"
            assert c["Mandible"][2] > c["Larynx"][2], f"{pt}: mandible superior to larynx"
            checked.add("mandible-larynx")
        if {"RightParotid", "LeftParotid"} <= c.keys():
            assert c["RightParotid"][0] < c["LeftParotid"][0], f"{pt}: right parotid at smaller LPS x"
            checked.add("parotids")
        if {"Brainstem", "Esophagus"} <= c.keys():
            assert c["Brainstem"][2] > c["Esophagus"][2], f"{pt}: brainstem superior to esophagus"
            checked.add("brainstem-esophagus")
        if {"Mandible", "SpinalCord"} <= c.keys():
            assert c["Mandible"][1] < c["SpinalCord"][1], f"{pt}: mandible anterior to spinal cord"
    assert checked == {"mandible-larynx", "parotids", "brainstem-esophagus"}


@needs_data
def test_geometry_and_labels_match_the_source(real):
    for pt in TRAIN:
        organs, sizes = truth(DATA / "train-pats" / pt)
        hu, image = read(real["out"] / f"imagesTr/{pt}_0000.nii.gz")
        labels, label_image = read(real["out"] / f"labelsTr/{pt}.nii.gz")
        assert image.GetSpacing() == pytest.approx((sizes[1], sizes[0], sizes[2]), rel=1e-6)
        assert label_image.GetSpacing() == image.GetSpacing() and label_image.GetOrigin() == image.GetOrigin()
        assert hu.shape == labels.shape == (N, N, N)
        for name, index in organs.items():
            a0, a1, a2 = np.unravel_index(index, (N, N, N))
            inside = labels[N - 1 - a2, a0, a1]
            # Only overlap with another contour may take a voxel away from its structure.
            assert np.mean(inside == ID[name]) > 0.9, f"{pt} {name}"
            assert (labels == ID[name]).sum() <= len(index)


@needs_data
def test_hounsfield_units_are_plausible(real):
    for pt in TRAIN:
        hu, _ = read(real["out"] / f"imagesTr/{pt}_0000.nii.gz")
        labels, _ = read(real["out"] / f"labelsTr/{pt}.nii.gz")
        cord = np.isin(labels, [ID["Brainstem"], ID["SpinalCord"]])
        assert -50 <= np.median(hu[cord]) <= 80, pt
        body = hu > -500
        assert -100 <= np.median(hu[body]) <= 100, pt
        fat = hu[(hu > -200) & (hu < -50)]
        assert -150 <= np.median(fat) <= -60, pt
        assert hu[0, 0, 0] == hu[-1, -1, -1] == -1024 and np.mean(hu == -1024) > 0.5, pt
        if (labels == ID["Mandible"]).any():
            assert np.median(hu[labels == ID["Mandible"]]) > 300, pt
        assert hu.max() <= 3071


@needs_data
def test_plain_and_gzipped_inputs_give_identical_outputs(real):
    for name in (f"imagesTr/{PLAIN}_0000.nii.gz", f"labelsTr/{PLAIN}.nii.gz"):
        a, ia = read(real["out"] / name)
        b, ib = read(real["gz_out"] / name)
        assert np.array_equal(a, b) and a.dtype == b.dtype
        for get in (sitk.Image.GetSpacing, sitk.Image.GetOrigin, sitk.Image.GetDirection):
            assert get(ia) == get(ib)


@needs_data
def test_input_tree_is_unchanged(real):
    before, after = real["hashes"]
    assert before == after and len(before) > 20


@needs_data
def test_cli_converts_and_warns_about_skipped_patient(real, caplog):
    out = real["root"] / "cli-out"
    with caplog.at_level(logging.WARNING):
        assert main(["convert", "openkbp", str(real["src"]), str(out), "--test-split", "validation-pats"]) == 0
    assert any("pt_999" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    ds = PartialDataset(out)
    assert ds.training_ids == sorted(TRAIN) and ds.test_ids == [TEST]
