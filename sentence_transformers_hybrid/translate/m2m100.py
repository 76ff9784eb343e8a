"""M2M-100 / NLLB checkpoints from ``transformers`` as translators, and the language-code tables they need."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .._utils import default_progress

logger = logging.getLogger(__name__)

__all__ = ["ISO_FROM_NLLB", "M2M100Translator", "NLLB_CODES"]

#: ISO 639-1 codes (as used by M2M-100 and LAReQA) -> NLLB-200 (FLORES-200) codes. Codes not listed here can be
#: given in NLLB form directly (``"eng_Latn"``).
NLLB_CODES: dict[str, str] = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "az": "azj_Latn", "be": "bel_Cyrl", "bg": "bul_Cyrl",
    "bn": "ben_Beng", "bs": "bos_Latn", "ca": "cat_Latn", "cs": "ces_Latn", "cy": "cym_Latn", "da": "dan_Latn",
    "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn", "et": "est_Latn", "fa": "pes_Arab",
    "fi": "fin_Latn", "fr": "fra_Latn", "ga": "gle_Latn", "gl": "glg_Latn", "gu": "guj_Gujr", "ha": "hau_Latn",
    "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "hu": "hun_Latn", "hy": "hye_Armn", "id": "ind_Latn",
    "ig": "ibo_Latn", "is": "isl_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "jv": "jav_Latn", "ka": "kat_Geor",
    "kk": "kaz_Cyrl", "km": "khm_Khmr", "kn": "kan_Knda", "ko": "kor_Hang", "lo": "lao_Laoo", "lt": "lit_Latn",
    "lv": "lvs_Latn", "mk": "mkd_Cyrl", "ml": "mal_Mlym", "mn": "khk_Cyrl", "mr": "mar_Deva", "ms": "zsm_Latn",
    "my": "mya_Mymr", "ne": "npi_Deva", "nl": "nld_Latn", "no": "nob_Latn", "pa": "pan_Guru", "pl": "pol_Latn",
    "ps": "pbt_Arab", "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl", "sd": "snd_Arab", "si": "sin_Sinh",
    "sk": "slk_Latn", "sl": "slv_Latn", "so": "som_Latn", "sq": "als_Latn", "sr": "srp_Cyrl", "sv": "swe_Latn",
    "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu", "th": "tha_Thai", "tl": "tgl_Latn", "tr": "tur_Latn",
    "uk": "ukr_Cyrl", "ur": "urd_Arab", "uz": "uzn_Latn", "vi": "vie_Latn", "xh": "xho_Latn", "yo": "yor_Latn",
    "zh": "zho_Hans", "zu": "zul_Latn",
}  # fmt: skip
ISO_FROM_NLLB: dict[str, str] = {v: k for k, v in NLLB_CODES.items()}


class M2M100Translator:
    """An M2M-100 or NLLB-200 checkpoint from ``transformers`` as a translator for :func:`translate_parallel`.

    Texts are tokenized once, sorted by token length (longest first) and generated in batches of ``batch_size``
    so that little compute goes into padding; outputs come back in input order. Language codes are ISO 639-1
    (``"en"``, ``"de"``, as in LAReQA) for both families: for an NLLB checkpoint they are mapped through
    :data:`NLLB_CODES` (``"de"`` -> ``"deu_Latn"``), and NLLB codes are accepted as they are.

    Args:
        model_name: Hub id or local folder of an ``M2M100ForConditionalGeneration`` checkpoint with an
            ``M2M100Tokenizer`` (``facebook/m2m100_418M``, ``facebook/m2m100_1.2B``) or an ``NllbTokenizer``
            (``facebook/nllb-200-distilled-600M``).
        device: ``"cuda"``, ``"cpu"``, ...; default CUDA when available.
        max_length: input tokens kept per text (longer texts are truncated, with a warning).
        num_beams: beam size; 1 is greedy search.
        batch_size: texts per ``generate`` call.
        max_new_tokens: generated tokens per text; default ``max_length + max_length // 2``.
        dtype: passed to ``from_pretrained`` (e.g. ``torch.float16`` on a GPU).
        show_progress_bar: a tqdm bar per call; default on when logging is at INFO or below.

    The cache identity :attr:`id` is the model name plus the settings that change outputs (``num_beams``,
    ``max_length``, ``max_new_tokens``).

    Example::

        >>> translate = M2M100Translator("facebook/m2m100_418M")  # downloads 1.9 GB from the Hub  # doctest: +SKIP
        >>> translate(["Who wrote Faust?"], "en", "de")  # needs the model above  # doctest: +SKIP
        ['Wer hat Faust geschrieben?']
    """

    def __init__(
        self,
        model_name: str = "facebook/m2m100_418M",
        device: str | None = None,
        max_length: int = 256,
        num_beams: int = 1,
        batch_size: int = 32,
        max_new_tokens: int | None = None,
        dtype: Any = None,
        show_progress_bar: bool | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        for arg, value in (("max_length", max_length), ("num_beams", num_beams), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        self.model_name = str(model_name)
        self.max_length = max_length
        self.num_beams = num_beams
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens if max_new_tokens is not None else max_length + max_length // 2
        self.show_progress_bar = show_progress_bar
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
        kwargs = {"dtype": dtype} if dtype is not None else {}
        self.model = AutoModelForSeq2SeqLM.from_pretrained(self.model_name, **kwargs).to(self.device).eval()
        self.family = "m2m100" if hasattr(self.tokenizer, "get_lang_id") else "nllb"
        if self.family == "m2m100":
            language_ids = list(self.tokenizer.lang_code_to_id.values())
        else:
            from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

            ids = self.tokenizer.convert_tokens_to_ids(sorted(set(FAIRSEQ_LANGUAGE_CODES) | set(NLLB_CODES.values())))
            language_ids = [i for i in ids if i is not None and i != self.tokenizer.unk_token_id]
        self._language_ids = torch.tensor(sorted(set(language_ids)), dtype=torch.long)

    @property
    def id(self) -> str:
        """Cache identity: model and output-changing settings."""
        return f"{self.model_name}|beams={self.num_beams}|max_length={self.max_length}|max_new_tokens={self.max_new_tokens}"

    def __repr__(self) -> str:
        return f"M2M100Translator({self.id!r}, family={self.family!r}, device={str(self.device)!r})"

    def language_code(self, language: str) -> str:
        """The model's own code for ``language`` (ISO 639-1 or NLLB form); ValueError if the model lacks it."""
        if self.family == "m2m100":
            code = ISO_FROM_NLLB.get(language, language)
            if code not in self.tokenizer.lang_code_to_id:
                raise ValueError(
                    f"language {language!r} is not an M2M-100 language code; expected one of "
                    f"{sorted(self.tokenizer.lang_code_to_id)}"
                )
            return code
        code = NLLB_CODES.get(language, language)
        token_id = self.tokenizer.convert_tokens_to_ids(code)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(
                f"language {language!r} ({code!r}) is not a language token of {self.model_name!r}; use an NLLB code "
                "such as 'eng_Latn' or an ISO 639-1 code listed in NLLB_CODES"
            )
        return code

    def _target_token_id(self, code: str) -> int:
        if self.family == "m2m100":
            return self.tokenizer.get_lang_id(code)
        return self.tokenizer.convert_tokens_to_ids(code)

    def __call__(self, texts: Sequence[str], source_language: str, target_language: str) -> list[str]:
        """Translate ``texts`` from ``source_language`` into ``target_language``; one output per input, in order."""
        import torch

        texts = list(texts)
        if not texts:
            return []
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"text {i} is {type(t).__name__}, expected str")
        src = self.language_code(source_language)
        forced = self._target_token_id(self.language_code(target_language))
        self.tokenizer.src_lang = src
        encoded = self.tokenizer(texts)["input_ids"]
        lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
        too_long = np.flatnonzero(lengths > self.max_length)
        if len(too_long):
            logger.warning(
                "%d of %d texts are longer than max_length=%d tokens and were truncated (longest: %d tokens)",
                len(too_long), len(texts), self.max_length, int(lengths.max()),
            )
            cut = self.tokenizer([texts[i] for i in too_long], truncation=True, max_length=self.max_length)["input_ids"]
            for i, ids in zip(too_long, cut):
                encoded[i] = ids
            lengths[too_long] = [len(ids) for ids in cut]
        order = np.argsort(-lengths, kind="stable")
        out: list[str] = [""] * len(texts)
        show = self.show_progress_bar if self.show_progress_bar is not None else default_progress(None, logger)
        with torch.inference_mode(), tqdm(total=len(texts), desc=f"{source_language}->{target_language}",
                                          unit="text", disable=not show, leave=False) as bar:
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
                generated = self.model.generate(
                    input_ids=batch["input_ids"].to(self.device),
                    attention_mask=batch["attention_mask"].to(self.device),
                    forced_bos_token_id=forced,
                    num_beams=self.num_beams,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                )
                # language tokens are not "special" to every tokenizer version: blank them out before decoding
                generated[torch.isin(generated, self._language_ids.to(generated.device))] = self.tokenizer.pad_token_id
                for i, text in zip(idx, self.tokenizer.batch_decode(generated, skip_special_tokens=True)):
                    out[i] = text
                bar.update(len(idx))
        return out


# ---------------------------------------------------------------------------------------------------- files / CLI
