"""Showing generated text as it is made: whole characters only, and cut before a stop string.

Two problems appear as soon as text is printed token by token:
- A byte-level token can end in the middle of a character: "😀" is 4 bytes and may be 2 tokens, and
  decoding each token on its own prints U+FFFD twice. `StreamDecoder` holds incomplete UTF-8 bytes back.
- A stop string ("\n\n", "###") can be split across tokens, and its start may already be on screen when
  its end arrives. `Continuation` searches all the text generated so far (`find_stop`) and holds back the
  last few characters until they are known not to begin a stop string.

Who uses it: `sample.py` (`--stream`, `--stop`, `--interactive`, `--num-samples`), `playground.py`
(`StreamDecoder`, text as it is generated).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable

from src.tokenizer import Tokenizer


class StreamDecoder:
    """Decodes token ids one at a time, holding back characters that are split across tokens.

    A byte-level token can end in the middle of a character: "😀" is 4 bytes and may be 2 tokens.
    Decoding each token on its own would print U+FFFD (�) twice instead of 😀. An incremental UTF-8
    decoder keeps the incomplete bytes until the rest arrives; `flush` releases whatever is left
    (an unfinished character becomes U+FFFD only then). Concatenating everything `push` and `flush`
    return gives exactly `tokenizer.decode(ids)`.

        stream = StreamDecoder(tokenizer)
        for token_id in generated:
            print(stream.push(token_id), end="", flush=True)
        print(stream.flush())

    Works with any `Tokenizer` (both have `decode_bytes`).
    """

    def __init__(self, tokenizer: Tokenizer):
        self._decode_bytes = tokenizer.decode_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (may be "" while a character is unfinished)."""
        return self._utf8.decode(self._decode_bytes([token_id]))

    def flush(self) -> str:
        """End of stream: return any held-back bytes (an incomplete character becomes U+FFFD)."""
        return self._utf8.decode(b"", final=True)


class Continuation:
    """The text of one generated row, decoded as its tokens arrive and cut before the first stop string.

    `add` takes the row's next token; `done` turns True at a stop string, at "<|endoftext|>" or at `finish`.
    `new_text` returns the text that is final but not yet returned: for streaming, everything except the
    last (longest stop string - 1) characters, which could still turn out to begin a stop string.
    """

    def __init__(self, tokenizer: Tokenizer, stops: list[str]):
        self.decoder = StreamDecoder(tokenizer)
        self.stops = stops
        self.eot = tokenizer.eot_token_id  # None for the char tokenizer
        self.holdback = max((len(s) for s in stops), default=1) - 1
        self.text = ""
        self.shown = 0  # characters of `text` already returned by new_text
        self.done = False

    def add(self, token: int) -> None:
        if self.done:
            return  # the batch goes on for other rows; this one has ended
        if token == self.eot:
            self.finish()
            return
        self.text += self.decoder.push(token)
        self._cut()

    def finish(self) -> None:
        """End of generation: release held-back bytes (an unfinished character becomes U+FFFD)."""
        if not self.done:
            self.text += self.decoder.flush()
            self._cut()
            self.done = True

    def _cut(self) -> None:
        at = find_stop(self.text, self.stops) if self.stops else None
        if at is not None:
            self.text = self.text[:at]
            self.done = True

    def new_text(self) -> str:
        end = len(self.text) if self.done else len(self.text) - self.holdback
        piece = self.text[self.shown : end] if end > self.shown else ""
        self.shown = max(self.shown, end)
        return piece


def find_stop(text: str, stop_strings: Iterable[str]) -> int | None:
    """Index in `text` where the earliest stop string begins, or None if none occurs.

    The caller cuts the output there (`text[:index]`), so the stop string itself is not shown.

        >>> find_stop("Q: hi\\nA: hello\\nQ: bye", ["\\nQ:", "###"])
        14

    A stop string can be split across tokens ("\\n" in one token, "Q:" in the next), so search the
    text generated so far, not only the newest token's piece. A streaming caller that searches only
    recent text must keep at least the last `max(len(s) for s in stop_strings) - 1` characters of
    earlier text in the search, and should hold that many characters back from the screen until it
    knows they do not start a stop string.

    Stop strings must not be empty (an empty string matches everywhere): callers check them once, on entry.
    """
    best = None
    for stop in stop_strings:
        index = text.find(stop)
        if index != -1 and (best is None or index < best):
            best = index
    return best
