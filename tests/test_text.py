"""Vocabularies, the token file, and the batch streams of truncated BPTT."""

import numpy as np
import pytest
from conftest import TINY, one_error_line

from rnnkit import RnnkitError, Vocab, text
from rnnkit.text import PreparedData, Streams, default_corpus, prepare


def test_char_vocab_round_trip_and_unknown_symbols():
    v = Vocab("char", tuple(sorted(map(ord, "helo"))))
    ids, unknown = v.encode("hello, ñ")
    assert v.decode(ids) == "hello" and unknown == [",", " ", "ñ"]
    assert v.index("e") == 0 and v.symbol(v.index("o")) == "o"
    with pytest.raises(KeyError, match="not in the vocabulary of 4"):
        v.index("z")
    assert Vocab.from_json(v.to_json()) == v


def test_byte_vocab_encodes_utf8_bytes():
    v = Vocab("byte", tuple(range(256)))
    ids, unknown = v.encode("é")
    assert v.decode(ids) == "é".encode() and not unknown and len(ids) == 2


def test_byte_vocab_index_accepts_exactly_the_names_symbol_gives():
    v = Vocab("byte", (10, 65, 0xA9, 0xC2))
    names = [v.symbol(i) for i in range(len(v))]
    assert names == ["\n", "A", "\\xa9", "\\xc2"]
    assert [v.index(name) for name in names] == [0, 1, 2, 3]
    assert v.index(0xA9) == 2  # a byte value
    # "©" is c2 a9 in UTF-8: no single byte of this vocabulary stands for it.
    with pytest.raises(KeyError) as e:
        v.index("©")
    assert e.value.args[0].startswith(r"'©' is 2 bytes in UTF-8 (\xc2\xa9), not one symbol")
    for other in ("\\x41", "\\xA9", "\\xzz", "AB", ""):  # "A" is named "A"; names are lower case
        with pytest.raises(KeyError) as e:
            v.index(other)
        assert "is not a symbol of this byte vocabulary" in e.value.args[0]
    ids, unknown = v.encode("A©B\n")
    assert ids == [1, 3, 2, 0] and unknown == ["B"]  # unknown bytes are named as symbol() names them


@pytest.mark.parametrize("kind", ["char", "byte"])
def test_lone_surrogates_are_refused_by_name(kind):
    v = Vocab(kind, tuple(range(256)) if kind == "byte" else tuple(map(ord, "ab")))
    with pytest.raises(RnnkitError, match=r"the text contains '\\ud800' at character 1, a lone "
                       "surrogate"):
        v.encode("a\ud800b")


@pytest.mark.parametrize("bad", [{"kind": "word", "codes": [1]}, {"kind": "char", "codes": [2, 1]},
                                 {"kind": "char", "codes": []}, {"kind": "byte", "codes": [300]},
                                 {"kind": "char", "codes": ["a"]}, [1, 2]])
def test_malformed_vocab_json_is_refused(bad):
    with pytest.raises(RnnkitError):
        Vocab.from_json(bad)


def test_prepare_memory_maps_tokens(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("hello world\nçà va\n", encoding="utf-8")
    data = prepare([f], tmp_path / "data")
    assert isinstance(data.tokens, np.memmap)
    assert data.vocab.decode(data.tokens.tolist()) == f.read_text(encoding="utf-8")
    assert data.tokens.dtype == np.uint8
    again = PreparedData.open(tmp_path / "data")
    assert np.array_equal(again.tokens, data.tokens) and again.vocab == data.vocab


def test_prepare_streams_chunks_and_splits_characters_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "CHUNK_BYTES", 7)  # every multibyte character risks a split
    body = "añb€c😀d" * 50
    f = tmp_path / "u.txt"
    f.write_text(body, encoding="utf-8")
    data = prepare([f], tmp_path / "d")
    assert data.vocab.decode(data.tokens.tolist()) == body


def test_invalid_utf8_names_the_byte_and_suggests_byte_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "CHUNK_BYTES", 5)
    f = tmp_path / "bin.txt"
    f.write_bytes(b"abcdefgh\xffij")
    with pytest.raises(RnnkitError, match=r"not valid UTF-8 \(byte 8\).*--tokenizer byte"):
        prepare([f], tmp_path / "d")
    data = prepare([f], tmp_path / "d", kind="byte")
    assert data.vocab.decode(data.tokens.tolist()) == f.read_bytes()


def test_corrupt_token_file_is_refused(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("abcabcabc")
    prepare([f], tmp_path / "d")
    with open(tmp_path / "d" / "tokens.bin", "ab") as w:
        w.write(b"\x00")
    with pytest.raises(RnnkitError, match="not a readable prepared data directory"):
        PreparedData.open(tmp_path / "d")


def test_token_ids_outside_the_vocabulary_are_refused_on_open(tmp_path, monkeypatch):
    f = tmp_path / "a.txt"
    f.write_text("abc" * 100)
    prepare([f], tmp_path / "d")
    tokens = tmp_path / "d" / "tokens.bin"
    raw = bytearray(tokens.read_bytes())
    raw[250] = 250  # one byte of 250 in a vocabulary of 3
    tokens.write_bytes(raw)
    monkeypatch.setattr(text, "CHUNK_BYTES", 64)  # checked in chunks: the bad id is in the fourth
    with pytest.raises(RnnkitError, match=r"tokens.bin holds id 250 at position 250, outside the "
                       r"vocabulary of 3 symbols.*prepare it again"):
        PreparedData.open(tmp_path / "d")


def test_eval_of_a_run_whose_token_file_has_a_bad_id_is_one_line(cli, corpus, tmp_path):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", 3)[0] == 0
    tokens = run / "data" / "tokens.bin"
    raw = bytearray(tokens.read_bytes())
    raw[-1] = 250  # in the held-out split that eval reads
    tokens.write_bytes(raw)
    status, _, err = cli("eval", run)
    assert status == 2 and "outside the vocabulary" in one_error_line(err)


@pytest.mark.parametrize("count", ["1e400", "1" * 5000, "-3", "true", "2.0"])
def test_data_json_with_an_unusable_count_is_refused(tmp_path, count):
    f = tmp_path / "a.txt"
    f.write_text("abcabc")
    prepare([f], tmp_path / "d")
    meta = tmp_path / "d" / "data.json"
    meta.write_text(meta.read_text().replace('"count": 6', f'"count": {count}'))
    with pytest.raises(RnnkitError, match="not a readable prepared data directory"):
        PreparedData.open(tmp_path / "d")


@pytest.mark.parametrize("case", ["missing", "empty", "directory"])
def test_bad_corpus_files(tmp_path, case):
    path = tmp_path / "x.txt"
    if case == "empty":
        path.write_text("")
    if case == "directory":
        path.mkdir()
    with pytest.raises(RnnkitError, match={"missing": "does not exist", "empty": "is empty",
                                           "directory": "is a directory"}[case]):
        prepare([path], tmp_path / "d")


def test_streams_are_contiguous_from_batch_to_batch():
    tokens = np.arange(1000) % 251
    s = Streams(tokens, batch_size=4, seq_len=10, seed=0)
    assert s.L == 250 and s.per_epoch == 24
    x0, y0, fresh0 = s.batch(0)
    x1, _, fresh1 = s.batch(1)
    assert fresh0 and not fresh1
    assert np.array_equal(y0[:, :-1], x0[:, 1:])  # targets are the next tokens
    assert np.array_equal(x1[:, 0], y0[:, -1])  # batch 1 continues where batch 0 stopped
    assert np.array_equal(x0[:, 0], tokens[[0, 250, 500, 750]])  # B streams side by side


def test_streams_move_offsets_each_epoch_deterministically():
    tokens = np.arange(1003)
    a, b = Streams(tokens, 1, 10, seed=3), Streams(tokens, 1, 10, seed=3)
    assert a.slack > 0
    offsets = {int(a.batch(e * a.per_epoch)[0][0, 0]) for e in range(1, 8)}
    assert len(offsets) > 1  # the cut points move between epochs
    for i in [0, 5, 100, 101, 1000]:
        assert np.array_equal(a.batch(i)[0], b.batch(i)[0])  # a pure function of i


def test_streams_serve_a_subset_of_streams():
    tokens = np.arange(400)
    whole, half = Streams(tokens, 4, 5), Streams(tokens, 4, 5, streams=range(2, 4))
    assert np.array_equal(whole.batch(3)[0][2:], half.batch(3)[0])


def test_too_short_corpus_is_refused():
    with pytest.raises(RnnkitError, match="shorter than one training sequence"):
        text.fit_batch_size(50, 64, 100)
    assert text.fit_batch_size(1000, 64, 99) == 10


def test_default_corpus_is_this_pythons_stdlib():
    files = default_corpus(limit_bytes=100_000)
    assert files and all(f.suffix == ".py" for f in files)
    assert sum(f.stat().st_size for f in files) >= 100_000


def test_default_corpus_leaves_out_tests_and_third_party_modules(tmp_path, monkeypatch):
    """A Python that is not a virtual environment keeps its site-packages inside its library
    folder: the modules there are not the standard library."""
    lib = tmp_path / "python3.99"
    for name in ("os.py", "json/__init__.py", "site-packages/six.py", "dist-packages/yaml.py",
                 "test/test_os.py", "test_all.py", "empty/__init__.py"):
        (lib / name).parent.mkdir(parents=True, exist_ok=True)
        (lib / name).write_text("" if name.startswith("empty") else "x = 1\n")
    monkeypatch.setattr(text.sysconfig, "get_paths", lambda: {"stdlib": str(lib)})
    files = default_corpus(limit_bytes=1 << 20)
    assert [f.relative_to(lib).as_posix() for f in files] == ["os.py", "json/__init__.py"]


def test_a_vocabulary_wider_than_any_model_is_refused_before_encoding(tmp_path):
    from rnnkit.configs import MAX_SIZE
    from rnnkit.errors import RnnkitError
    from rnnkit.text import build_vocab

    wide = tmp_path / "wide.txt"  # every character once, from U+10000 on (past the surrogates)
    wide.write_text("".join(chr(0x10000 + i) for i in range(MAX_SIZE + 1)), encoding="utf-8")
    # it was refused only by the model, after the whole text was encoded, as "vocab_size 65537"
    with pytest.raises(RnnkitError, match=r"the text has 65,537 distinct characters, more than "
                       r"the 65,536 a character model takes; train a byte model"):
        build_vocab([wide], "char")
    assert len(build_vocab([wide], "byte")) <= 256


def test_unknown_symbols_are_shown_escaped_once():
    from rnnkit.text import shown_unknown

    # a byte vocabulary names bytes from 128 as \xNN, and those below as characters: an ESC
    # or a newline went to the terminal raw
    assert shown_unknown(["\x1b", "\n", "a", "\\x82"], "byte") == r"'\x1b\na\x82'"
    assert shown_unknown(["é", "\n"], "char") == r"'é\n'"


def test_a_symbol_is_a_character_a_byte_or_a_whole_code():
    from rnnkit.text import Vocab
    vocab = Vocab("char", tuple(range(97, 107)))
    assert vocab.index("h") == vocab.index(104) == 7
    for odd in (104.9, True):  # read as 'h' (int(104.9)) and as code 1
        with pytest.raises(KeyError, match="a symbol is a character, one byte or a code"):
            vocab.index(odd)
