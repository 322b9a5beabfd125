"""A worked answer to exercise 1: the project's `CharTokenizer` (src/tokenizer.py), cut down to its core."""


class Tokenizer:
    """One token per character. The vocabulary is the sorted list of the distinct characters of `text`."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))  # sorted: the same ids in every run, on every machine
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}
        self.itos = {i: ch for i, ch in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> list[int]:
        unknown = sorted(set(s) - self.stoi.keys())
        if unknown:
            raise ValueError(f"not in the vocabulary: {', '.join(map(repr, unknown))}")
        return [self.stoi[ch] for ch in s]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.itos[int(i)] for i in ids)
