import gzip
import hashlib
import pathlib
import zipfile

import numpy as np
import pytest
from conftest import require_archive

from mlstm4reco.datasets import amazon, get_amazon_dataset, get_movielens_dataset, movielens
from mlstm4reco.datasets._download import find_or_download
from mlstm4reco.datasets.movielens import read_movielens_archive
from mlstm4reco.datasets.synthetic import get_synthetic_dataset

ML10M_LINES = [
    "1::122::5::838985046",
    "1::185::4.5::838983525",
    "2::122::0.5::868245777",
    "71567::65133::3::1230073456",
]


def write_zip(path, member, text):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, text)
    return path


# ---------------------------------------------------------------- real MovieLens files


def test_movielens_1m():
    folder = require_archive("ml-1m.zip")
    data = get_movielens_dataset("1M", data_dir=folder)
    assert len(data) == 1_000_209
    assert len(np.unique(data.user_ids)) == 6040
    assert len(np.unique(data.item_ids)) == 3706
    assert (data.num_users, data.num_items) == (6041, 3953)
    assert (data.user_ids[0], data.item_ids[0], data.ratings[0], data.timestamps[0]) == (
        1,
        1193,
        5,
        978300760,
    )
    assert data.ratings.min() == 1 and data.ratings.max() == 5
    assert (data.timestamps.min(), data.timestamps.max()) == (956703932, 1046454590)
    assert data.ratings.dtype == np.float32 and data.timestamps.dtype == np.int64


def test_movielens_100k_found_through_the_environment(monkeypatch):
    folder = require_archive("ml-100k.zip")
    monkeypatch.setenv("MLSTM4RECO_DATA", str(folder))
    data = get_movielens_dataset("100K")
    assert (len(data), len(np.unique(data.user_ids)), len(np.unique(data.item_ids))) == (
        100_000,
        943,
        1682,
    )
    assert (data.user_ids[0], data.item_ids[0], data.ratings[0], data.timestamps[0]) == (
        196,
        242,
        3,
        881250949,
    )
    assert (data.timestamps.min(), data.timestamps.max()) == (874724710, 893286638)


# ---------------------------------------------------------------- fixtures in the original formats


def test_movielens_10m_fixture(tmp_path):
    archive = write_zip(
        tmp_path / "ml-10m.zip", "ml-10M100K/ratings.dat", "\n".join(ML10M_LINES) + "\n"
    )
    data = read_movielens_archive(archive, "10M")
    assert data.user_ids.tolist() == [1, 1, 2, 71567]
    assert data.item_ids.tolist() == [122, 185, 122, 65133]
    assert data.ratings.tolist() == [5.0, 4.5, 0.5, 3.0]
    assert data.timestamps.tolist() == [838985046, 838983525, 868245777, 1230073456]
    assert data.num_items == 65134
    # A user-placed file is validated by parsing: four rows is not MovieLens 10M.
    with pytest.raises(ValueError, match="expected 10,000,054 ratings in MovieLens 10M, found 4"):
        get_movielens_dataset("10M", data_dir=tmp_path)


AMAZON_META = """\
# Full information about Amazon Share the Love products
Total items: 548552

Id:   0
ASIN: 0771044445
  discontinued product

Id:   1
ASIN: 0827229534
  title: Patterns of Preaching: A Sermon Sampler
  group: Book
  salesrank: 396585
  similar: 5  0804215715  156101074X  0687023955  0687074231  082721619X
  categories: 2
   |Books[283155]|Subjects[1000]|Religion & Spirituality[22]|Christianity[12290]
  reviews: total: 2  downloaded: 2  avg rating: 5
    2000-7-28  cutomer: A2JW67OY8U6HHK  rating: 5  votes:  10  helpful:   9
    2003-12-14  cutomer: A2VE83MZF98ITY  rating: 4  votes:   6  helpful:   5

Id:   2
ASIN: 0738700797
  title: Candlemas: Feast of Flames
  reviews: total: 3  downloaded: 3  avg rating: 4.5
    2001-12-16  cutomer: A11NCO6YTE4BTJ  rating: 5  votes:   5  helpful:   4
    2002-1-7  cutomer: A9CQ3PLRNIR83  rating: 4  votes:   5  helpful:   5
    2003-12-14  cutomer: A2VE83MZF98ITY  rating: 2  votes:   1  helpful:   1

Id:   7
ASIN: 0486287785
  reviews: total: 1  downloaded: 1  avg rating: 1
    2004-2-29  cutomer: A2VE83MZF98ITY  rating: 1  votes:   0  helpful:   0
"""


def write_amazon(folder, text=AMAZON_META):
    path = pathlib.Path(folder) / "amazon-meta.txt.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(text)
    return path


def test_amazon_parser(tmp_path):
    arrays = amazon.parse_amazon_meta(write_amazon(tmp_path))
    assert arrays["item_id"].tolist() == [2, 2, 3, 3, 3, 8]  # Id + 1
    assert arrays["user_id"].tolist() == [0, 1, 2, 3, 1, 1]  # order of first appearance
    assert arrays["rating"].tolist() == [5, 4, 5, 4, 2, 1]
    assert arrays["timestamp"][0] == 964742400  # 2000-07-28 UTC
    assert arrays["timestamp"][-1] == 1078012800  # 2004-02-29 UTC (a leap day)


def test_amazon_filters_on_unfiltered_counts_and_reindexes(tmp_path):
    write_amazon(tmp_path)
    # Customer A2VE83MZF98ITY has 3 reviews; items 2 and 3 have 2 and 3 reviews.
    data = get_amazon_dataset(min_user_interactions=3, min_item_interactions=2, data_dir=tmp_path)
    assert data.user_ids.tolist() == [0, 0]  # only that customer, renumbered from 0
    assert data.item_ids.tolist() == [1, 2]  # items 2 and 3 kept; item 8 (1 review) dropped
    assert data.ratings.tolist() == [4, 2]
    everything = get_amazon_dataset(1, 1, data_dir=tmp_path)
    assert (
        len(everything) == 6 and everything.item_ids.max() == 3 and everything.user_ids.max() == 3
    )
    with pytest.raises(ValueError, match="no interaction is left"):
        get_amazon_dataset(10, 10, data_dir=tmp_path)


def test_amazon_second_load_uses_the_cache(tmp_path, monkeypatch):
    write_amazon(tmp_path)
    first = get_amazon_dataset(1, 1, data_dir=tmp_path)

    def fail(path):
        raise AssertionError("parsed again")

    monkeypatch.setattr(amazon, "parse_amazon_meta", fail)
    second = get_amazon_dataset(1, 1, data_dir=tmp_path)
    np.testing.assert_array_equal(first.timestamps, second.timestamps)
    write_amazon(tmp_path, AMAZON_META + "\n")  # a changed source is parsed again
    with pytest.raises(AssertionError, match="parsed again"):
        get_amazon_dataset(1, 1, data_dir=tmp_path)


def test_amazon_malformed_review_names_the_line(tmp_path):
    broken = AMAZON_META.replace(
        "2002-1-7  cutomer: A9CQ3PLRNIR83  rating: 4", "2002-1-7  cutomer: A9CQ3PLRNIR83  rating: x"
    )
    path = write_amazon(tmp_path, broken)
    line = next(k for k, text in enumerate(broken.splitlines(), 1) if "rating: x" in text)
    with pytest.raises(ValueError, match=rf"amazon-meta.txt.gz, line {line}: malformed review"):
        amazon.parse_amazon_meta(path)


def test_synthetic_is_seeded_and_learnable():
    a = get_synthetic_dataset(num_users=50, num_items=30, num_interactions=5000, random_state=4)
    b = get_synthetic_dataset(num_users=50, num_items=30, num_interactions=5000, random_state=4)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    assert a.item_ids.min() >= 1 and a.num_items == 30 and len(a) == 5000
    # Order 1: the most frequent successor of an item is far more likely than 1 / 29.
    pairs = np.stack([a.item_ids[:-1], a.item_ids[1:]])[:, a.user_ids[:-1] == a.user_ids[1:]]
    counts = np.zeros((30, 30))
    np.add.at(counts, (pairs[0], pairs[1]), 1)
    top = counts.max(1).sum() / counts.sum()
    assert top > 0.4
    noisy = get_synthetic_dataset(50, 30, 5000, concentration=100.0, random_state=4)
    pairs = np.stack([noisy.item_ids[:-1], noisy.item_ids[1:]])
    counts = np.zeros((30, 30))
    np.add.at(counts, (pairs[0], pairs[1]), 1)
    assert counts.max(1).sum() / counts.sum() < top / 2


# ---------------------------------------------------------------- lookup order and downloads


def test_lookup_order(tmp_path, monkeypatch):
    explicit, env, cache = (tmp_path / n for n in ("explicit", "env", "cache"))
    for folder in (explicit, env, cache / "mlstm4reco"):
        folder.mkdir(parents=True)
        (folder / "f.bin").write_text(folder.name)
    monkeypatch.setenv("MLSTM4RECO_DATA", str(env))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    url = "file:///nonexistent/f.bin"
    assert find_or_download("f.bin", url, None, data_dir=explicit).read_text() == "explicit"
    assert find_or_download("f.bin", url, None).read_text() == "env"
    (env / "f.bin").unlink()
    assert find_or_download("f.bin", url, None).read_text() == "mlstm4reco"


def serve_movielens(tmp_path, monkeypatch, text):
    """A fake GroupLens server: a file:// folder holding ml-100k.zip."""
    remote = tmp_path / "remote"
    remote.mkdir()
    archive = write_zip(remote / "ml-100k.zip", "ml-100k/u.data", text)
    monkeypatch.setattr(movielens, "BASE_URL", remote.as_uri() + "/")
    monkeypatch.delenv("MLSTM4RECO_DATA", raising=False)  # no real archive found first
    return hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_verifies_md5_and_lands_in_the_cache(tmp_path, monkeypatch):
    md5 = serve_movielens(tmp_path, monkeypatch, "1\t2\t3\t4\n" * 100_000)
    monkeypatch.setitem(
        movielens.VARIANTS,
        "100K",
        movielens.VARIANTS["100K"].__class__("ml-100k.zip", "ml-100k/u.data", "\t", md5, 100_000),
    )
    data = get_movielens_dataset("100K")
    assert len(data) == 100_000
    cached = pathlib.Path(find_or_download("ml-100k.zip", "file:///nowhere", None))
    assert (
        cached.parent.name == "mlstm4reco" and hashlib.md5(cached.read_bytes()).hexdigest() == md5
    )


def test_checksum_mismatch_deletes_the_partial_download_and_keeps_other_files(
    tmp_path, monkeypatch
):
    serve_movielens(tmp_path, monkeypatch, "1\t2\t3\t4\n")
    target = tmp_path / "data"
    target.mkdir()
    (target / "ml-1m.zip").write_bytes(b"a good copy of something else")
    with pytest.raises(ValueError, match="checksum mismatch .* expected MD5 0e33842e"):
        get_movielens_dataset("100K", data_dir=target)
    assert sorted(p.name for p in target.iterdir()) == ["ml-1m.zip"]
    assert (target / "ml-1m.zip").read_bytes() == b"a good copy of something else"


def test_no_network_says_which_file_and_where(tmp_path, monkeypatch):
    monkeypatch.setattr(movielens, "BASE_URL", "file:///nonexistent/")
    monkeypatch.delenv("MLSTM4RECO_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match=r"ml-1m.zip is not on disk .* put it in .*data"):
        get_movielens_dataset("1M", data_dir=tmp_path / "data")
    assert not list((tmp_path / "data").iterdir())


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "text,message",
    [
        ("1::2::3::4\n5::6::7::8::9\n", r"malformed line .*line 2"),
        ("1::2::3::4\n1::x::3::4\n", r"ratings.dat, line 2: expected an integer item_id, got 'x'"),
        ("1::2::3::4\n1::2::3::4\n-3::2::3::4\n", r"line 3: negative user_id -3"),
        ("1::2::3::4\n1::2::3\n", r"line 2: expected an integer timestamp"),
        ("1::2::3::4\n1::2::five::4\n", r"line 2: expected a number rating, got 'five'"),
        ("", r"no ratings"),
        # ids written as floats, too long for any integer, over int32, and the padding id
        (
            "1::2::3::4\n196.0::2::3::4\n",
            r"ratings.dat, line 2: expected an integer user_id, got '196.0'",
        ),
        (
            "1::2::3::4\n1::12345678901234567890123::3::4\n",
            r"ratings.dat, line 2: item_id 12345678901234567890123 is over the largest id, "
            r"2147483647",
        ),
        (
            "1::2::3::4\n1::2::3::4\n2147483648::2::3::4\n",
            r"ratings.dat, line 3: user_id 2147483648 is over the largest id, 2147483647",
        ),
        ("1::2::3::4\n1::0::3::4\n", r"ratings.dat, line 2: item_id 0, which pads sequences"),
        (
            "1::2::3::4\n1::2::3::4.5\n",
            r"ratings.dat, line 2: expected an integer timestamp, got '4.5'",
        ),
    ],
)
def test_bad_lines(tmp_path, text, message):
    archive = write_zip(tmp_path / "ml-1m.zip", "ml-1m/ratings.dat", text)
    with pytest.raises(ValueError, match=message):
        read_movielens_archive(archive, "1M")


def test_truncated_and_corrupt_archives(tmp_path):
    good = write_zip(tmp_path / "good.zip", "ml-1m/ratings.dat", "1::2::3::4\n" * 1000)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.zip: corrupt or truncated zip archive"):
        read_movielens_archive(truncated, "1M")
    corrupt = tmp_path / "corrupt.zip"
    middle = len(data) // 3
    corrupt.write_bytes(
        data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 8]) + data[middle + 8 :]
    )
    with pytest.raises(ValueError, match="corrupt"):
        read_movielens_archive(corrupt, "1M")
    wrong = write_zip(tmp_path / "wrong.zip", "something/else.txt", "x")
    with pytest.raises(ValueError, match="no ml-1m/ratings.dat in the archive"):
        read_movielens_archive(wrong, "1M")
    with pytest.raises(ValueError, match="unknown MovieLens variant '20M'"):
        get_movielens_dataset("20M")


def test_a_folder_named_like_the_archive_is_an_error_not_a_download(tmp_path, monkeypatch):
    (tmp_path / "ml-100k.zip").mkdir()

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr("mlstm4reco.datasets._download.download", no_download)
    with pytest.raises(
        ValueError, match=r"ml-100k.zip: a folder, where the file ml-100k.zip was looked for"
    ):
        get_movielens_dataset("100K", data_dir=tmp_path)


def test_datasets_are_named_in_one_registry(monkeypatch):
    """The names a config or --dataset takes are the registry's, and each loads what its
    own loader gives."""
    from mlstm4reco import datasets
    from mlstm4reco.study import config

    assert (
        config.DATASETS
        == tuple(datasets.DATASETS)
        == ("synthetic", "ml100k", "ml1m", "ml10m", "amazon", "goodbooks", "file")
    )
    a = datasets.get_dataset(
        "synthetic", num_users=10, num_items=8, num_interactions=200, random_state=1
    )
    b = get_synthetic_dataset(num_users=10, num_items=8, num_interactions=200, random_state=1)
    assert np.array_equal(a.item_ids, b.item_ids) and np.array_equal(a.timestamps, b.timestamps)
    calls = []
    monkeypatch.setattr(
        datasets,
        "get_movielens_dataset",
        lambda variant, data_dir: calls.append((variant, data_dir)),
    )
    monkeypatch.setitem(datasets.DATASETS, "ml1m", datasets._movielens("1M"))
    datasets.get_dataset("ml1m", "/somewhere")
    assert calls == [("1M", "/somewhere")]
    with pytest.raises(
        ValueError,
        match=r"unknown dataset 'ml20m'; choose from \['amazon', 'file', 'goodbooks', 'ml100k'",
    ):
        datasets.get_dataset("ml20m")
    with pytest.raises(TypeError):
        datasets.get_dataset("ml100k", min_rating=4)


def test_goodbooks_loader_reads_the_release_format(tmp_path):
    """A fixture in the goodbooks-10k ratings.csv format: ids as in the file, the file's
    order as the timestamps (the file has none), so each user's sequence is their rows in
    file order; bad values name the line."""
    from mlstm4reco.datasets import get_dataset

    rows = [(1, 258, 5), (2, 4081, 4), (1, 4, 3), (2, 26, 5), (1, 26, 4), (3, 33, 4)]
    text = "user_id,book_id,rating\n" + "".join(f"{u},{b},{r}\n" for u, b, r in rows)
    (tmp_path / "goodbooks-10k-ratings.csv").write_text(text)
    data = get_dataset("goodbooks", data_dir=tmp_path)
    assert data.user_ids.tolist() == [u for u, _, _ in rows]
    assert data.item_ids.tolist() == [b for _, b, _ in rows]
    assert data.ratings.tolist() == [float(r) for _, _, r in rows]
    sequences = data.to_sequence(max_sequence_length=3).sequences
    assert sequences[0].tolist() == [258, 4, 26] and sequences[1].tolist() == [0, 4081, 26]
    (tmp_path / "goodbooks-10k-ratings.csv").write_text(text + "4,x7,3\n")
    with pytest.raises(
        ValueError, match=r"goodbooks-10k-ratings.csv, line 8: column 'book_id': expected"
    ):
        get_dataset("goodbooks", data_dir=tmp_path)
    (tmp_path / "goodbooks-10k-ratings.csv").write_text("user,book,rating\n1,2,3\n")
    with pytest.raises(
        ValueError, match=r"no column 'user_id'; expected a header user_id,book_id,rating"
    ):
        get_dataset("goodbooks", data_dir=tmp_path)
