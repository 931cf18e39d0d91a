from placement_lint import prefilter
from placement_lint.regions import select_blocks


def test_every_trigger_token_passes_the_screen():
    for token in prefilter.TRIGGER_TOKENS:
        assert any(s in token for s in prefilter.SCREEN), token
        assert prefilter.might_match(b"x = " + token + b"\n"), token


def test_files_without_tokens_are_skipped():
    assert not prefilter.might_match(b"import torch\nlocal = 1\nrank = 0\n")
    assert prefilter.might_match(b"y = x.to_local()\n")
    assert prefilter.might_match(b"plain = 1\n", extra=[b"plain"])


def test_rank_only_regions_need_slicing():
    src = (
        "import torch.distributed as dist\n\n"
        "def log_rank():\n    print(dist.get_rank())\n\n"
        "def my_part(x, n):\n    r = dist.get_rank()\n    return x[r * n:(r + 1) * n]\n"
    )
    kept = [start for start, _, _ in select_blocks(src)]
    assert 3 not in kept and 6 in kept
