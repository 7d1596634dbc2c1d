"""A generative companion to the neural classifier: one character n-gram language model per language.

Each language gets an interpolated Kneser-Ney model of its names' spelling (lowercased, framed by
begin / end markers); a name's class score is log P(name | language) + log P(language). It is fitted
by counting, in a fraction of a second, and errs differently from the recurrent network: averaging
the two models' log-probabilities (`ModelConfig.charlm_weight`) was worth about +1.4 points of
accuracy and +0.03 macro-F1 over the network alone on four split seeds of the shared data.

Hand-written rather than taken from `nltk.lm`: NLTK scores one n-gram per Python call (minutes per
batch of names at 18 languages), cannot run on a GPU, and does not fit in a model's state_dict.
Here the counts become sorted tables of (n-gram, language) keys in buffers, and scoring is a few
`torch.searchsorted` lookups over the whole batch, on whatever device the model is on.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.features import ALPHABET, SYMBOL_BASE, lowercase_framed

# what a name's next symbol can be: the lowercased alphabet (OOV included) and the end marker
_SYMBOLS = len(set(ALPHABET.lower())) + 1


def ngram_codes(framed: torch.Tensor, order: int, n: int) -> torch.Tensor:
    """Codes (B, T + 1) of the n-gram ending at each predicted position (the name's symbols and the
    end marker): the n - 1 symbols before it and itself. n = 0 gives the empty context, code 0."""
    steps = framed.shape[1] - (order - 1)
    code = torch.zeros(framed.shape[0], steps, dtype=torch.long, device=framed.device)
    for k in range(n):
        code = code * SYMBOL_BASE + framed[:, order - n + k:order - n + k + steps]
    return code


class CountedTables(nn.Module):
    """A model fitted by counting, whose tables (buffers named in `TABLES`) are as large as the
    data makes them: a state_dict loads into a fresh instance whatever their sizes."""

    TABLES: tuple[str, ...] = ()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for name in self.TABLES:
            if prefix + name in state_dict:
                setattr(self, name, state_dict[prefix + name].to(getattr(self, name).device))
            elif strict:
                missing_keys.append(prefix + name)


class CharNgramLM(CountedTables):
    """Per-language interpolated Kneser-Ney character n-gram models, scored as a classifier.

    P(c | h) = max(N(h, c) - d, 0) / N(h) + d * T(h) / N(h) * P(c | h') with h' = h less its first
    symbol, N raw counts at the highest order and continuation counts (distinct left extensions)
    below it, T(h) the number of distinct symbols seen after h, and 1 / symbols at the bottom.
    Tables hold one row of per-language values for each n-gram (or context) code seen, sorted by
    code, so a lookup is one searchsorted per position for all languages at once.
    """

    TABLES = ("gram_keys", "gram_probs", "context_keys", "context_backoff", "log_prior")

    def __init__(self, order: int, discount: float, n_classes: int):
        super().__init__()
        self.order, self.discount, self.n_classes = order, discount, n_classes
        for name in self.TABLES:
            self.register_buffer(name, torch.zeros(0, dtype=torch.long) if "keys" in name else
                                 torch.zeros(0, n_classes) if name != "log_prior" else torch.zeros(0))

    @property
    def fitted(self) -> bool:
        return len(self.log_prior) > 0

    @torch.no_grad()
    def fit(self, tokens: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> CharNgramLM:
        """Count the training names' n-grams per language; replaces any earlier fit."""
        framed = lowercase_framed(tokens.cpu(), lengths.cpu(), self.order)
        valid = (torch.arange(framed.shape[1] - self.order + 1)[None, :] <= lengths.cpu()[:, None]).numpy()
        lang = np.broadcast_to(labels.cpu().numpy()[:, None], valid.shape)[valid]
        top = ngram_codes(framed, self.order, self.order).numpy()[valid]
        keys, counts = np.unique(top * self.n_classes + lang, return_counts=True)  # highest order: raw counts
        levels = [(keys, counts)]
        for n in range(self.order - 1, 0, -1):  # continuation counts: one per distinct longer n-gram type
            shorter = (keys // self.n_classes) % SYMBOL_BASE ** n * self.n_classes + keys % self.n_classes
            keys, counts = np.unique(shorter, return_counts=True)
            levels.append((keys, counts))
        grams, contexts = [], []  # per level: (key, value) of every (code, language) seen
        for keys, counts in levels:
            context = keys // self.n_classes // SYMBOL_BASE * self.n_classes + keys % self.n_classes
            ctx_keys, ctx_index = np.unique(context, return_inverse=True)
            totals = np.bincount(ctx_index, weights=counts)
            types = np.bincount(ctx_index)
            grams.append((keys, np.maximum(counts - self.discount, 0) / totals[ctx_index]))
            contexts.append((ctx_keys, self.discount * types / totals))
        self.gram_keys, self.gram_probs = self._dense(grams, missing=0.0)
        self.context_keys, self.context_backoff = self._dense(contexts, missing=1.0)  # unseen context: keep p
        frequency = torch.bincount(labels.cpu(), minlength=self.n_classes).float().clamp(min=1)
        self.log_prior = (frequency / frequency.sum()).log().to(self.gram_keys.device)
        return self

    def _dense(self, levels: list[tuple[np.ndarray, np.ndarray]], missing: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted distinct codes and a (codes, languages) table of values, `missing` where a language
        has not seen the code: a lookup is one searchsorted per position, not one per language."""
        keys = np.concatenate([k for k, _ in levels])
        values = np.concatenate([v for _, v in levels])
        codes, row = np.unique(keys // self.n_classes, return_inverse=True)
        table = np.full((len(codes) + 1, self.n_classes), missing, dtype=np.float32)  # + a row for unseen codes
        table[row, keys % self.n_classes] = values
        device = self.log_prior.device
        return torch.from_numpy(codes).to(device), torch.from_numpy(table).to(device)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """log P(name | language) + log P(language), (B, n_classes), in float32."""
        if not self.fitted:
            raise RuntimeError("the n-gram models have not been fitted: call fit() first")
        framed = lowercase_framed(tokens, lengths, self.order)
        steps = framed.shape[1] - self.order + 1
        valid = torch.arange(steps, device=framed.device)[None, :] <= lengths.to(framed.device)[:, None]
        prob = None
        for n in range(1, self.order + 1):  # from the unigram up: p = discounted + backoff * p_lower
            gram = ngram_codes(framed, self.order, n)
            discounted = lookup_rows(self.gram_keys, self.gram_probs, gram)
            backoff = lookup_rows(self.context_keys, self.context_backoff, gram // SYMBOL_BASE)
            lower = 1.0 / _SYMBOLS if prob is None else prob
            prob = discounted.addcmul_(backoff, torch.as_tensor(lower, device=backoff.device))
        log_likelihood = prob.masked_fill_(~valid[..., None], 1.0).log_().sum(1)
        return log_likelihood + self.log_prior


def lookup_rows(codes: torch.Tensor, table: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """(*query.shape, languages): the table's row for each code in `query`; its last row (the
    value for unseen codes) where a code is not among `codes`."""
    flat = query.reshape(-1)
    if len(codes):
        at = torch.searchsorted(codes, flat).clamp(max=len(codes) - 1)
        at = torch.where(codes[at] == flat, at, len(codes))
    else:
        at = torch.zeros_like(flat)
    return table[at].reshape(*query.shape, table.shape[1])
