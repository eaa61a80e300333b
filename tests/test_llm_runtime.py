"""Runtime side of LLM bundles, torch-free: the appended EOS token survives truncation and is counted."""
import pytest

from edgeemb.encode.batching import TextTokenizer
from edgeemb.errors import BundleError


@pytest.fixture()
def tokenizer_file(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<unk>", "</s>", "a", "b", "c", "d"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_eos_is_appended_and_kept_when_truncating(tokenizer_file):
    tok = TextTokenizer(tokenizer_file, max_length=4, pad_id=1, padding_side="left", eos_id=1)
    out = tok.tokenize(["a b", "a b c d a b", ""])
    assert out.ids == [[2, 3, 1], [2, 3, 4, 1], [1]]  # the long text keeps 3 tokens and then EOS
    assert out.truncated == 1
    assert all(len(ids) == len(types) for ids, types in zip(out.ids, out.type_ids))
    batch = next(tok.batches(out, batch_size=8, max_tokens=1 << 20))
    assert batch.input_ids.shape[1] == 4 and (batch.input_ids[:, -1] == 1).all()  # left padding: EOS last


def test_without_eos_nothing_is_appended(tokenizer_file):
    tok = TextTokenizer(tokenizer_file, max_length=4)
    assert tok.tokenize(["a b c d a b"]).ids == [[2, 3, 4, 5]]


def test_eos_needs_room(tokenizer_file):
    with pytest.raises(BundleError, match="no room for the appended EOS"):
        TextTokenizer(tokenizer_file, max_length=1, eos_id=1)
