"""A Hugging Face tokenizer in the shape the engine needs: token ids, the bytes of each token,
end-of-generation ids and the chat template. Used by the transformers backend (hf.py) and, as
``tokenizer=hf:<folder or hub id>``, by the openai backend for servers whose model has no GGUF here."""

from __future__ import annotations

import threading
from pathlib import Path

from ..errors import EgcfgError


def _bytes_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE (Qwen, Llama 3): each byte has a printable stand-in character; this
    is the inverse map. Printable Latin-1 bytes stand for themselves, the rest map to 256+n."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in keep}
    extra = 0
    for b in range(256):
        if b not in keep:
            table[chr(256 + extra)] = b
            extra += 1
    return table


class HFTokenizer:
    def __init__(self, source: str, n_vocab: int | None = None, extra_eos=None):
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise EgcfgError("hf tokenizers need transformers: pip install 'egcfg[hf]'") from None
        path = Path(source).expanduser()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path) if path.is_dir() else source)
        except (OSError, ValueError) as exc:
            raise EgcfgError(f"transformers could not load a tokenizer from {source}: {str(exc).splitlines()[0]}") from None
        self.name = Path(source).name
        self.n_vocab = max(n_vocab or 0, len(self.tokenizer))
        # One lock: the fast tokenizer keeps `split_special_tokens` as state on a shared object and
        # encodes with the GIL released, so concurrent solves would race on it.
        self._lock = threading.Lock()
        self._special = set(self.tokenizer.all_special_ids) | {
            i for i, t in self.tokenizer.added_tokens_decoder.items() if t.special}
        self._pieces = self._piece_table()
        self._eog = self._eog_ids(extra_eos)

    def _piece_table(self) -> list[bytes]:
        """Bytes of every token id (special tokens: empty, as llama.cpp renders them for output)."""
        decoder = _bytes_decoder()
        tokens = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        # Byte-level BPE vocabularies spell space and newline as "Ġ" and "Ċ"; SentencePiece ones
        # use "▁" for space and <0xNN> tokens for raw bytes.
        byte_level = any(t in ("Ġ", "Ċ") for t in tokens if t)
        table = []
        for i, tok in enumerate(tokens):
            if tok is None or i in self._special:
                table.append(b"")
            elif byte_level and all(c in decoder for c in tok):
                table.append(bytes(decoder[c] for c in tok))
            elif not byte_level and len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
                table.append(bytes([int(tok[3:5], 16)]))
            else:  # a SentencePiece word piece, or an added plain-text token
                table.append(tok.replace("\u2581", " ").encode("utf-8"))
        return table + [b""] * max(0, self.n_vocab - len(table))

    def _eog_ids(self, extra_eos) -> set[int]:
        """End of generation: the eos ids of the tokenizer and the generation config, plus every
        special (control) token: none of them belongs in a program."""
        ids = {i for i, t in self.tokenizer.added_tokens_decoder.items() if t.special}
        for value in (self.tokenizer.eos_token_id, extra_eos):
            ids.update(value if isinstance(value, list) else [value] if value is not None else [])
        return ids

    def tokenize(self, text: str, *, special: bool = False, bos: bool = False) -> list[int]:
        with self._lock:
            ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=not special)["input_ids"]
        bos_id = self.tokenizer.bos_token_id
        if bos and bos_id is not None and getattr(self.tokenizer, "add_bos_token", False):
            ids = [bos_id] + ids
        return list(ids)

    def piece(self, token: int) -> bytes:
        return self._pieces[token] if 0 <= token < len(self._pieces) else b""

    def special_text(self, token: int) -> str:
        """How a special token is written in a prompt (e.g. "<|im_start|>"); "" for other tokens."""
        return self.tokenizer.convert_ids_to_tokens(token) or "" if token in self._special else ""

    def eos_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    def bos_id(self) -> int | None:
        """The BOS token if this tokenizer starts a text with one (``tokenize(bos=True)``), else None."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None and getattr(self.tokenizer, "add_bos_token", False) else None

    def is_eog(self, token: int) -> bool:
        return token in self._eog

    def render_chat(self, messages: list[dict]) -> str:
        if not self.tokenizer.chat_template:
            raise EgcfgError(f"{self.name} has no chat template; use an instruct model")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
