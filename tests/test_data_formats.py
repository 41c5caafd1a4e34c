"""Image-set formats: round trips (same pixels, same captions), atomic writes, bad files as BadSetError."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import PIL.Image
import pytest

from jointdiff.data.formats import (
    SPLIT,
    BadSetError,
    ImageSet,
    WebDatasetWriter,
    read_folder_set,
    read_paper_set,
    write_folder_set,
    write_paper_set,
)
from jointdiff.data.sources import WebDatasetSource, expand_braces, iter_sets, open_source
from jointdiff.data.synthetic import random_set


def same(a: ImageSet, b: ImageSet) -> bool:
    """Equal pixels and captions."""
    return a.captions == b.captions and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images, strict=True)
    )


def test_paper_round_trip_and_layout(tmp_path):
    s = random_set(3, 8, seed=1, key="cat")
    write_paper_set(tmp_path, "cat", s)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.png", "cat.txt"]  # no temporary files left
    with PIL.Image.open(tmp_path / "cat.png") as im:
        assert im.size == (8, 24)  # N = H / W images stacked vertically
    assert (tmp_path / "cat.txt").read_text() == SPLIT.join(s.captions)
    back = read_paper_set(tmp_path / "cat.png")
    assert same(back, s) and back.key == "cat"


def test_folder_round_trip(tmp_path):
    s = random_set(2, 8, seed=2, key="dog")
    folder = write_folder_set(tmp_path, s)
    assert same(read_folder_set(folder), s)


def test_webdataset_round_trip_shards_and_order(tmp_path):
    sets = [random_set(1 + i % 3, 8, seed=i) for i in range(5)]
    with WebDatasetWriter(tmp_path, prefix="toy", sets_per_shard=2) as writer:
        for s in sets:
            writer.write(s)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy-000000.tar", "toy-000001.tar", "toy-000002.tar"]
    with tarfile.open(tmp_path / "toy-000000.tar") as tar:
        assert tar.getnames() == ["set000000.png", "set000000.txt", "set000001.png", "set000001.txt"]
    back = list(iter_sets(WebDatasetSource(str(tmp_path))))
    assert len(back) == 5 and all(same(b, s) and b.key == s.key for b, s in zip(back, sets, strict=True))
    assert len(expand_braces(str(tmp_path / "toy-{000000..000002}.tar"))) == 3
    assert len(open_source("webdataset", str(tmp_path / "toy-{000000..000002}.tar"))) == 3


def test_webdataset_writer_is_atomic_on_error(tmp_path):
    with pytest.raises(RuntimeError), WebDatasetWriter(tmp_path, sets_per_shard=2) as writer:
        for i in range(3):
            writer.write(random_set(2, 8, seed=i))
        raise RuntimeError("producer crashed")
    assert [p.name for p in tmp_path.iterdir()] == ["shard-000000.tar"]  # complete shard kept, partial dropped
    with pytest.raises(ValueError, match="duplicate set key"), WebDatasetWriter(tmp_path / "b") as writer:
        writer.write(random_set(1, 8, seed=0, key="a"))
        writer.write(random_set(1, 8, seed=1, key="a"))


def test_webdataset_writer_resumes_after_the_finished_shards(tmp_path):
    sets = [random_set(1, 8, seed=i, key=f"s{i}") for i in range(3)]
    with WebDatasetWriter(tmp_path, prefix="toy", sets_per_shard=1) as writer:
        writer.write(sets[0])
        writer.write(sets[1])
    (tmp_path / ".toy-000002.tar.abc.tmp").write_bytes(b"a partial shard of a crashed writer")
    (tmp_path / "other-000000.tar").write_bytes(b"")  # another prefix: not ours
    writer = WebDatasetWriter(tmp_path, prefix="toy", sets_per_shard=1)
    assert writer.resume() == 2 and not list(tmp_path.glob("*.tmp"))
    writer.write(sets[2])
    writer.close()
    assert [p.name for p in writer.shards] == ["toy-000000.tar", "toy-000001.tar", "toy-000002.tar"]
    back = list(iter_sets(WebDatasetSource(str(tmp_path / "toy-{000000..000002}.tar"))))
    assert [b.key for b in back] == ["s0", "s1", "s2"]
    with pytest.raises(RuntimeError, match="before the first write"):
        writer.resume()


def test_image_set_validation():
    im = PIL.Image.new("RGB", (8, 8))
    with pytest.raises(BadSetError, match="1 images but 2 captions"):
        ImageSet([im], ["a", "b"])
    with pytest.raises(BadSetError, match="square"):
        ImageSet([PIL.Image.new("RGB", (8, 6))], ["a"])
    with pytest.raises(BadSetError, match="mode L"):
        ImageSet([PIL.Image.new("L", (8, 8))], ["a"])
    with pytest.raises(ValueError, match="invalid set key"):
        write_paper_set("/tmp", "a.b", ImageSet([im], ["a"]))


def test_bad_paper_files_raise_bad_set_error(tmp_path):
    s = random_set(2, 8, seed=3)
    write_paper_set(tmp_path, "good", s)
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "trunc.txt").write_text("a<|split|>b")
    PIL.Image.new("RGB", (8, 12)).save(tmp_path / "shape.png")  # 12 % 8 != 0: not stacked squares
    (tmp_path / "shape.txt").write_text("a")
    PIL.Image.new("RGB", (8, 16)).save(tmp_path / "count.png")
    (tmp_path / "count.txt").write_text("only one caption")
    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "nocap.png")
    for name, message in [
        ("trunc", "unreadable image"),
        ("shape", "not N square images"),
        ("count", "2 stacked images but 1 captions"),
        ("nocap", "cannot read"),
    ]:
        with pytest.raises(BadSetError, match=message):
            read_paper_set(tmp_path / f"{name}.png")


def test_truncated_shard_keeps_complete_samples(tmp_path):
    with WebDatasetWriter(tmp_path, sets_per_shard=10) as writer:
        for i in range(4):
            writer.write(random_set(2, 32, seed=i))
    shard = tmp_path / "shard-000000.tar"
    data = shard.read_bytes()
    for cut, message in [
        (data.index(b"set000002.png") + 512 + 100, "truncated"),  # inside the third sample's image data
        (data.index(b"set000002.txt"), "needs an image"),  # at a member boundary: the third sample lacks its txt
    ]:
        shard.write_bytes(data[:cut])
        items = list(iter_sets(WebDatasetSource(str(tmp_path))))
        good = [x for x in items if isinstance(x, ImageSet)]
        bad = [x for x in items if isinstance(x, BadSetError)]
        assert [s.key for s in good] == ["set000000", "set000001"]
        assert len(bad) == 1 and message in str(bad[0])
    member = io.BytesIO()
    with tarfile.open(fileobj=member, mode="w") as tar:  # a sample without captions
        info = tarfile.TarInfo("lonely.png")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"abcd"))
    (tmp_path / "extra.tar").write_bytes(member.getvalue())
    errors = [str(x) for x in iter_sets(WebDatasetSource(str(tmp_path / "extra.tar"))) if isinstance(x, BadSetError)]
    assert errors and "needs an image" in errors[0]
