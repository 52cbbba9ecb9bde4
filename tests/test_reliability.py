"""A generated corpus of bad, odd and hostile inputs, each with its exact outcome, scored once by `metaqap score` and
by `pipeline("image-quality")`: either a score equal to that of the plain image it stands for, or a skip with its
reason. Also: dataset folders never follow symbolic links out of themselves."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metaqap_cli import main
from metaqap_hf import ImageLoadError

from _images import random_photo
from _scoring import cli_environment, metaqap_command, save_tiny_checkpoint

# name in the corpus -> ("same", reference name) | ("scored", None) | ("skip", reason substring) | ("absent", None)
EXPECTED: dict[str, tuple[str, str | None]] = {}
BUILDERS = []


def case(name: str, outcome: str, detail: str | None = None):
    def register(build):
        EXPECTED[name] = (outcome, detail)
        BUILDERS.append((name, build))
        return build
    return register


def _photo() -> Image.Image:
    return random_photo(3, size=(48, 64))


def _grey() -> Image.Image:
    return _photo().convert("L")


def _save_decoded(source: Path, target: Path, transform=None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # bad_exif.jpg's "Corrupt EXIF data"
        with Image.open(source) as image:
            image = image.convert("RGB")
            (transform(image) if transform else image).save(target)


# --- images scored exactly like the plain image they stand for -------------------------------------------------
@case("rgb.png", "same", "rgb.png")
def _(path): _photo().save(path)


@case("rgba.png", "same", "rgb.png")
def _(path): _photo().convert("RGBA").save(path)


@case("png_named.jpg", "same", "rgb.png")
def _(path): _photo().save(path, format="PNG")


@case("no_suffix", "same", "rgb.png")
def _(path): _photo().save(path, format="PNG")


@case("UPPER.PNG", "same", "rgb.png")
def _(path): _photo().save(path)


@case("new\nline.png", "same", "rgb.png")
def _(path): _photo().save(path, format="PNG")


@case(os.fsdecode(b"bytes_\xff\xfe.png"), "same", "rgb.png")
def _(path): _photo().save(path, format="PNG")


@case("space and \u00e9t\u00e9.png", "same", "rgb.png")
def _(path): _photo().save(path)


@case("link.png", "same", "rgb.png")
def _(path): path.symlink_to("rgb.png")


@case("hard.png", "same", "rgb.png")
def _(path): os.link(path.parent / "rgb.png", path)


@case("nested/deeper/inner.png", "same", "rgb.png")
def _(path): _photo().save(path)


@case("folder_named.jpg/inside.png", "same", "rgb.png")
def _(path): _photo().save(path)


@case("rgb.bmp", "same", "rgb.png")
def _(path): _photo().save(path)


@case("rgb.tif", "same", "rgb.png")
def _(path): _photo().save(path)


@case("multipage.tif", "same", "rgb.png")
def _(path): _photo().save(path, save_all=True, append_images=[_grey(), Image.new("RGB", (10, 10))])


@case("rotated_ccw.png", "same", "rgb.png")
def _(path):
    exif = Image.Exif()
    exif[0x0112] = 8  # shown rotated 90 degrees counter-clockwise: store it turned the other way
    _photo().transpose(Image.Transpose.ROTATE_270).save(path, exif=exif)


@case("rotated.jpg", "same", "rotated_ref.png")
def _(path):
    exif = Image.Exif()
    exif[0x0112] = 6
    _photo().save(path, exif=exif, quality=90)
    _save_decoded(path, path.parent / "rotated_ref.png", lambda image: image.transpose(Image.Transpose.ROTATE_270))


@case("rotated_ref.png", "scored")
def _(path): pass  # written with rotated.jpg


@case("bad_exif.jpg", "same", "bad_exif_ref.png")
def _(path):
    _photo().save(path, quality=90)
    data = path.read_bytes()
    garbage = b"Exif\x00\x00MM\x00\x2a\x00\x00\xff\xff\xff\xf0" + b"\xff" * 20
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(garbage) + 2) + garbage + data[2:])
    _save_decoded(path, path.parent / "bad_exif_ref.png")


@case("bad_exif_ref.png", "scored")
def _(path): pass


@case("grey.png", "scored")
def _(path): _grey().save(path)


@case("grey16.png", "same", "grey.png")
def _(path): Image.fromarray(np.asarray(_grey()).astype(np.uint16) * 257).save(path)


@case("grey16.tif", "same", "grey.png")
def _(path): Image.fromarray(np.asarray(_grey()).astype(np.uint16) * 257).save(path)


@case("float.tif", "same", "grey.png")
def _(path): Image.fromarray(np.asarray(_grey()).astype(np.float32) / 255).save(path)


@case("grey_alpha.png", "same", "grey.png")
def _(path): _grey().convert("LA").save(path)


@case("palette.png", "same", "palette_ref.png")
def _(path):
    quantized = _photo().quantize(32)
    quantized.save(path)
    quantized.convert("RGB").save(path.parent / "palette_ref.png")


@case("palette_ref.png", "scored")
def _(path): pass


@case("palette_transparent.png", "same", "palette_ref.png")
def _(path): _photo().quantize(32).save(path, transparency=0)


@case("one_bit.png", "same", "one_bit_ref.png")
def _(path):
    bits = _grey().convert("1")
    bits.save(path)
    bits.convert("L").save(path.parent / "one_bit_ref.png")


@case("one_bit_ref.png", "scored")
def _(path): pass


@case("animated.gif", "same", "gif_frame0.png")
def _(path):
    frames = [_photo().quantize(64), random_photo(9, size=(48, 64)).quantize(64)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    _save_decoded(path, path.parent / "gif_frame0.png")


@case("gif_frame0.png", "scored")
def _(path): pass


@case("cmyk.jpg", "same", "cmyk_ref.png")
def _(path):
    _photo().convert("CMYK").save(path, quality=90)
    _save_decoded(path, path.parent / "cmyk_ref.png")


@case("cmyk_ref.png", "scored")
def _(path): pass


@case("cmyk.tif", "same", "cmyk_tif_ref.png")
def _(path):
    _photo().convert("CMYK").save(path)
    _save_decoded(path, path.parent / "cmyk_tif_ref.png")


@case("cmyk_tif_ref.png", "scored")
def _(path): pass


@case("progressive.jpg", "scored")
def _(path): _photo().save(path, quality=80, progressive=True)


@case("one_pixel.png", "scored")
def _(path): Image.new("RGB", (1, 1), (200, 30, 30)).save(path)


@case("one_row.png", "scored")
def _(path): random_photo(4, size=(1, 700)).save(path)


@case("large_reduced.png", "scored")
def _(path): random_photo(5, size=(64, 64)).resize((4400, 4100)).save(path, compress_level=1)


# --- inputs skipped with their reason ------------------------------------------------------------------------------
@case("empty.jpg", "skip", "empty file (0 bytes)")
def _(path): path.write_bytes(b"")


@case("truncated.jpg", "skip", "truncated")
def _(path):
    random_photo(6, size=(128, 128)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:900])


@case("truncated.png", "skip", "truncated")
def _(path):
    random_photo(6, size=(128, 128)).save(path)
    path.write_bytes(path.read_bytes()[:2000])


@case("text.png", "skip", "not an image file PIL can read")
def _(path): path.write_text("hello, I am not a picture\n")


@case("noise.bin", "skip", "not an image file PIL can read")
def _(path): path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


@case("drawing.svg", "skip", "not an image file PIL can read")
def _(path): path.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')


@case("bomb.png", "skip", "too large to score")
def _(path):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@case("float_0_255.tif", "skip", "float images must hold finite values in [0, 1]")
def _(path): Image.fromarray(np.asarray(_grey()).astype(np.float32)).save(path)


@case("float_nan.tif", "skip", "float images must hold finite values in [0, 1]")
def _(path): Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32)).save(path)


@case("pipe.jpg", "skip", "not a regular file")
def _(path): os.mkfifo(path)


@case("socket.png", "skip", "not a regular file")
def _(path):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()


@case("device.jpg", "skip", "not a regular file")
def _(path): path.symlink_to("/dev/zero")


@case("dangling.jpg", "skip", "broken symbolic link")
def _(path): path.symlink_to("does-not-exist.jpg")


@case("self_loop.jpg", "skip", "too many levels of symbolic links")
def _(path): path.symlink_to(path.name)


@case("back_to_top", "skip", "symbolic link to a folder already walked")
def _(path): path.symlink_to(".")


@case("broken.tar", "skip", "unreadable tar archive")
def _(path): path.write_bytes(b"this is not a tar archive" * 40)


def _add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    archive.addfile(member, io.BytesIO(data))


@case("shard.tar", "absent")
def _(path):
    photo = io.BytesIO()
    _photo().save(photo, format="PNG")
    with tarfile.open(path, "w") as archive:
        _add_member(archive, "sample/0001.png", photo.getvalue())
        _add_member(archive, "sample/0001.json", b'{"label": 1}')
        _add_member(archive, "sample/0002.jpg", b"not a jpeg")
        link = tarfile.TarInfo("sample/0003.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)


@case("shard.tar/sample/0001.png", "same", "rgb.png")
def _(path): pass


@case("shard.tar/sample/0002.jpg", "skip", "not an image file PIL can read")
def _(path): pass


@case("shard.tar/sample/0003.jpg", "skip", "a link or special entry in the archive, not followed")
def _(path): pass


@case(".hidden.png", "absent")
def _(path): _photo().save(path)


@case("empty_folder", "absent")
def _(path): path.mkdir()


@case("empty_folder.jpg", "skip", "a folder named like an image, holding no files")
def _(path): path.mkdir()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus") / "corpus"
    folder.mkdir()
    for name, build in BUILDERS:
        path = folder / name
        if "/" in name and not name.startswith("shard.tar"):
            path.parent.mkdir(parents=True, exist_ok=True)
        build(path)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def command_run(corpus, checkpoint, tmp_path_factory):
    """One `metaqap score` over the corpus: its exit status, stderr, and the rows it wrote, by name."""
    output = tmp_path_factory.mktemp("out") / "scores.jsonl"
    capture = pytest.MonkeyPatch()
    stderr = io.StringIO()
    capture.setattr("sys.stderr", stderr)
    try:
        status = main(["score", str(corpus), "--model", str(checkpoint), "--batch-size", "1",
                       "--dtype", "float32", "--output", str(output)])  # float32: the pipeline's precision
    finally:
        capture.undo()
    rows = {}
    for line in output.read_bytes().splitlines():
        row = json.loads(line)
        rows[os.path.relpath(row["path"], corpus)] = row
    return status, stderr.getvalue(), rows


def _skip_lines(stderr: str) -> dict[str, str]:
    return {line.split(": ", 1)[0].removeprefix("skipped "): line.split(": ", 1)[1]
            for line in stderr.splitlines() if line.startswith("skipped ")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_input_gets_its_exact_outcome(name, corpus, command_run):
    status, stderr, rows = command_run
    outcome, detail = EXPECTED[name]
    shown = repr(str(corpus / name)) if "\n" in name or "\udcff" in name else str(corpus / name)
    skipped = _skip_lines(stderr)
    if outcome == "skip":
        assert name not in rows
        assert detail in skipped[shown], skipped.get(shown)
    elif outcome == "absent":
        assert name not in rows and shown not in skipped
    else:
        assert name in rows and shown not in skipped
        assert rows[name]["path"] == str(corpus / name)  # names keep every byte, newlines included
        if outcome == "same":
            assert rows[name]["score"] == rows[detail]["score"] and rows[name]["std"] == rows[detail]["std"]


def test_the_run_counts_and_exit_status(command_run):
    status, stderr, rows = command_run
    skips = [name for name, (outcome, _) in EXPECTED.items() if outcome == "skip"]
    scored = [name for name, (outcome, _) in EXPECTED.items() if outcome in ("same", "scored")]
    assert status == 1  # some inputs skipped
    assert len(rows) == len(scored) and len(_skip_lines(stderr)) == len(skips)
    assert stderr.splitlines()[-1] == f"scored {len(scored)} files in 1 process, {len(skips)} skipped"
    assert "passed over 1 hidden entries" in stderr


@pytest.mark.parametrize("name", sorted(name for name in EXPECTED if "shard.tar/" not in name
                                        and EXPECTED[name][0] in ("same", "scored", "skip")
                                        and name not in ("back_to_top", "broken.tar", "empty_folder.jpg")))
def test_the_pipeline_agrees_with_the_command(name, corpus, checkpoint, command_run):
    """The same file through `pipeline(...)`: the same score, or an ImageLoadError with the same reason."""
    scorer = _pipeline(checkpoint)
    _, _, rows = command_run
    outcome, detail = EXPECTED[name]
    if outcome == "skip":
        with pytest.raises(ImageLoadError) as error:
            scorer(str(corpus / name))
        assert detail in error.value.reason
    else:
        assert scorer(str(corpus / name))["score"] == pytest.approx(rows[name]["score"], abs=1e-6)


_PIPELINES: dict = {}


def _pipeline(checkpoint: Path):
    from transformers import pipeline

    if checkpoint not in _PIPELINES:
        _PIPELINES[checkpoint] = pipeline("image-quality", model=str(checkpoint))
    return _PIPELINES[checkpoint]


# --- arguments ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("argument", "reason"), [
    ("missing.jpg", "no such file or directory"),
    ("looks_like.jpg", "folder holds no files"),
    ("only_hidden", "folder holds no files (1 hidden entries skipped)"),
])
def test_arguments_that_give_nothing_are_named(argument, reason, tmp_path, checkpoint, capsys):
    (tmp_path / "looks_like.jpg").mkdir()
    (tmp_path / "only_hidden").mkdir()
    _photo().save(tmp_path / "only_hidden" / ".secret.png")
    status = main(["score", str(tmp_path / argument), "--model", str(checkpoint)])
    err = capsys.readouterr().err
    assert status == 3
    assert f"skipped {tmp_path / argument}: {reason}" in err.splitlines()


def _without_root_powers() -> list[str]:
    """A command prefix under which permissions apply: root keeps its id but loses the capabilities that read past
    them."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root reads every folder, and setpriv is missing to drop that power")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_unreadable_folders_and_files_are_named(tmp_path, checkpoint):
    (tmp_path / "locked").mkdir()
    _photo().save(tmp_path / "locked" / "a.png")
    (tmp_path / "no_entry").mkdir()
    _photo().save(tmp_path / "no_entry" / "b.png")
    _photo().save(tmp_path / "open.png")
    (tmp_path / "locked").chmod(0)
    (tmp_path / "no_entry").chmod(stat.S_IRUSR)  # names listed, files not reachable
    try:
        result = subprocess.run([*_without_root_powers(), *metaqap_command("score", str(tmp_path), "--model",
                                                                           str(checkpoint))],
                                env=cli_environment(), capture_output=True, text=True, timeout=300)
    finally:
        for folder in ("locked", "no_entry"):
            (tmp_path / folder).chmod(stat.S_IRWXU)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert f"skipped {tmp_path / 'locked'}: cannot read folder (permission denied)" in lines
    assert f"skipped {tmp_path / 'no_entry' / 'b.png'}: permission denied" in lines
    assert lines[-1] == "scored 1 files in 1 process, 2 skipped"


# --- dataset folders stay inside themselves --------------------------------------------------------------------
def test_dataset_images_may_not_link_out_of_the_folder(tmp_path):
    from metaqap_hf.data._common import DatasetLayoutError, index_images

    images = tmp_path / "Images"
    images.mkdir()
    _photo().save(images / "real.jpg")
    (images / "alias.jpg").symlink_to(images / "real.jpg")  # a link within the folder is fine
    assert set(index_images(images)) == {"real.jpg", "alias.jpg"}
    (images / "evil.jpg").symlink_to("/etc/passwd")
    with pytest.raises(DatasetLayoutError, match=r"evil\.jpg -> /etc/passwd"):
        index_images(images)
