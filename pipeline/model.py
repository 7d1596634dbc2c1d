"""The character-level classifier: one module for RNN, LSTM and GRU cells.

The notebook's CharRNN (one-hot input, nn.RNN(58, 128), last hidden state, linear) is
`CharClassifier(ModelConfig.notebook(), n_classes)`.

An optional fastText-style branch (`ngram_buckets > 0`) averages embeddings of the name's
hashed character 1..4-grams, computed from the same token tensor inside `forward`, and joins
them to the recurrent features before the linear head: the n-grams learn fast and carry the
spelling statistics, the RNN adds order and context beyond four characters.

An optional generative companion (`charlm_order > 0`, `pipeline.charlm`), fitted by counting
on the training names before the network trains (and, by default, recounted with the validation
names once early stopping has chosen the network's epoch), is averaged with the network's
log-probabilities in `forward`; the loss trains the network alone (`member_logits`), and early
stopping judges it alone (`network_only`): the fixed n-gram models would only add noise to the
criterion (on split seed 1 they stopped the network at its 6th epoch, 0.027 macro-F1 short).

A second counted companion (`marks_weight > 0`, `pipeline.marks`) reads what the ASCII codes cannot
show, a name's accented letters as written ("Jäger", not "Jager"); it needs them passed beside the
codes (`marks`), and says nothing when they are not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipeline.charlm import CharNgramLM
from pipeline.config import ModelConfig
from pipeline.features import PAD, SYMBOL_BASE, VOCAB_SIZE, lowercase_framed
from pipeline.marks import LetterMarksModel

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
_OOV = VOCAB_SIZE - 1  # index of "_", the last symbol of ALPHABET
_GOLDEN = 0x9E3779B1  # Fibonacci hashing multiplier


def hashed_ngrams(tokens: torch.Tensor, lengths: torch.Tensor, n_max: int, buckets: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucket ids (B, M) of every character 1..n_max-gram of each name, lowercased and framed by
    boundary markers, with a (B, M) validity mask; pure tensor ops, no Python loop over names."""
    ext = lowercase_framed(tokens, lengths, order=2)  # a begin marker, the name, an end marker
    batch, width = ext.shape[0], ext.shape[1] - 2
    span = lengths.to(ext.device).clamp(max=width)[:, None] + 2  # symbols incl. both markers
    ids, masks = [], []
    positions = torch.arange(width + 2, device=ext.device)
    for n in range(1, n_max + 1):
        count = width + 3 - n
        code = torch.zeros(batch, count, dtype=torch.long, device=ext.device)
        for k in range(n):
            code = code * SYMBOL_BASE + ext[:, k:k + count]
        # n-grams of different n never collide: the leading digit is a non-zero symbol
        ids.append(((code * _GOLDEN) >> 16) % buckets)
        masks.append(positions[:count][None, :] + n <= span)
    return torch.cat(ids, 1), torch.cat(masks, 1)


def combine(member_logits: list[torch.Tensor]) -> torch.Tensor:
    """An ensemble's logits: mean log-probability of its members (a geometric-mean vote)."""
    if len(member_logits) == 1:
        return member_logits[0]
    return torch.stack([F.log_softmax(z.float(), dim=-1) for z in member_logits]).mean(0)


class CharClassifier(nn.Module):
    """Characters in, language logits out; variable lengths handled by packing."""

    def __init__(self, config: ModelConfig, n_classes: int):
        super().__init__()
        self.config = config
        if config.input == "embedding":
            self.embedding: nn.Embedding | None = nn.Embedding(VOCAB_SIZE, config.embedding_dim, padding_idx=PAD)
            input_size = config.embedding_dim
        else:
            self.embedding = None
            input_size = VOCAB_SIZE - 1  # one-hot over the 58 symbols; padding is all zeros
        self.rnn = CELLS[config.cell](
            input_size, config.hidden_size, num_layers=config.num_layers, batch_first=True,
            bidirectional=config.bidirectional, dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        directions = 2 if config.bidirectional else 1
        features = config.hidden_size * directions * (2 if config.pooling == "mean_max" else 1)
        self.ngrams: nn.EmbeddingBag | None = None
        if config.ngram_buckets:
            self.ngrams = nn.EmbeddingBag(config.ngram_buckets, config.ngram_dim, mode="sum")
            nn.init.normal_(self.ngrams.weight, std=0.1)
            features += config.ngram_dim
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(features, n_classes)
        # further ensemble members: same architecture, own initialisation, own loss in training
        single = config.model_copy(update={"members": 1, "charlm_order": 0, "marks_weight": 0.0})
        self.others = nn.ModuleList(CharClassifier(single, n_classes) for _ in range(config.members - 1))
        self.charlm: CharNgramLM | None = None
        if config.charlm_order:
            self.charlm = CharNgramLM(config.charlm_order, config.charlm_discount, n_classes)
        self.marks: LetterMarksModel | None = LetterMarksModel(n_classes) if config.marks_weight > 0 else None
        self._mix = True

    @contextlib.contextmanager
    def network_only(self) -> Iterator[CharClassifier]:
        """Within it, `forward` leaves the counted models (n-grams, letters) out: early stopping judges
        the part that trains."""
        mix, self._mix = self._mix, False
        try:
            yield self
        finally:
            self._mix = mix

    def fit_counts(self, tokens: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor,
                   marks: torch.Tensor | None = None) -> None:
        """Count these names into the n-gram models and, given their non-ASCII letters (`marks`), the
        letter model, replacing earlier counts (no-op without them): the training names before
        training, so that validation scores the whole model; training and validation names once the
        network's epoch is chosen."""
        if self.charlm is not None:
            self.charlm.fit(tokens, lengths, labels)
        if self.marks is not None and marks is not None:
            self.marks.fit(marks, labels)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.long()
        if self.embedding is not None:
            return self.embedding(tokens)
        return F.one_hot(tokens, VOCAB_SIZE)[..., 1:].float()

    def ngram_features(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        ids, mask = hashed_ngrams(tokens, lengths, self.config.ngram_max, self.config.ngram_buckets)
        if self.training and self.config.ngram_dropout > 0:
            mask = mask & (torch.rand(mask.shape, device=mask.device) >= self.config.ngram_dropout)
        weights = mask.float() / mask.sum(1, keepdim=True).clamp(min=1)  # mean over the name's n-grams
        return self.ngrams(ids, per_sample_weights=weights)

    def member_logits(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Each ensemble member's logits (one entry when `members` is 1); training puts a loss on each."""
        return [self._logits(tokens, lengths)] + [m._logits(tokens, lengths) for m in self.others]

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, marks: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, n_classes); for an ensemble, the mean of the members' log-probabilities; with
        fitted n-gram models, their weighted average with the network's log-probabilities; given
        the names' non-ASCII letters (`marks`) and a fitted letter model, plus its log-likelihoods."""
        logits = self._logits(tokens, lengths) if not len(self.others) else combine(self.member_logits(tokens, lengths))
        if not self._mix:
            return logits
        charlm = self.charlm(tokens, lengths) if self.charlm is not None and self.charlm.fitted else None
        letters = self.marks(marks) if marks is not None and self.marks is not None and self.marks.fitted else None
        return self.mix(logits, charlm, letters)

    def mix(self, network_logits: torch.Tensor, charlm_scores: torch.Tensor | None = None,
            letter_scores: torch.Tensor | None = None) -> torch.Tensor:
        """The weighted average of the network's and the n-gram models' log-probabilities, plus the
        letter model's log-likelihoods at `marks_weight`."""
        out = network_logits
        if charlm_scores is not None:
            w = self.config.charlm_weight
            out = (1 - w) * F.log_softmax(out.float(), dim=-1) + w * F.log_softmax(charlm_scores, dim=-1)
        if letter_scores is not None:
            out = F.log_softmax(out.float(), dim=-1) + self.config.marks_weight * letter_scores
        return out

    def _logits(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.training and self.config.char_dropout > 0:
            hit = (torch.rand(tokens.shape, device=tokens.device) < self.config.char_dropout) & (tokens != PAD)
            tokens = torch.where(hit, torch.full_like(tokens, _OOV), tokens)
        x = self.embed(tokens)
        lengths = lengths.clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, hidden = self.rnn(packed)
        if self.config.pooling == "last":
            h = hidden[0] if isinstance(hidden, tuple) else hidden  # LSTM returns (h, c)
            layer = h.view(self.config.num_layers, -1, h.shape[-2], h.shape[-1])[-1]  # (dirs, B, H)
            features = torch.cat(list(layer), dim=-1)
        else:
            steps, _ = pad_packed_sequence(out, batch_first=True)  # (B, T, dirs*H)
            mask = (torch.arange(steps.shape[1]) < lengths[:, None]).to(steps.device).unsqueeze(-1)
            mean = (steps * mask).sum(1) / lengths.to(steps.device, steps.dtype)[:, None]
            peak = steps.masked_fill(~mask, float("-inf")).amax(1)
            features = torch.cat([mean, peak], dim=-1)
        if self.ngrams is not None:
            features = torch.cat([features, self.ngram_features(tokens, lengths).to(features.dtype)], dim=-1)
        return self.head(self.dropout(features))


@torch.no_grad()
def predict_logits(model: nn.Module, tokens: torch.Tensor, lengths: torch.Tensor, marks: torch.Tensor | None = None,
                   batch_size: int = 2048) -> torch.Tensor:
    """Logits for many names at once, on the model's device, returned on CPU in input order; `marks`,
    the names' non-ASCII letters (`features.encode_marks`), for a model with a letter model."""
    model.eval()
    device = next(model.parameters()).device
    order = torch.argsort(lengths)
    out = torch.empty(len(lengths), model.head.out_features)
    if len(lengths) == 0:
        return out
    for chunk in order.split(batch_size):
        width = int(lengths[chunk].max().clamp(min=1))
        letters = None if marks is None else marks[chunk].to(device)
        out[chunk] = model(tokens[chunk, :width].to(device), lengths[chunk], letters).float().cpu()
    return out
