"""What the ASCII folding throws away: one Bernoulli model per language of a name's non-ASCII letters.

The notebook folds "Jäger" to "Jager" and "Grünewald" to "Grunewald", so a name typed with its
accents loses its strongest clue (the default network called both of those German names Russian
or English). This model puts it back: for each non-ASCII letter seen in training (ä, é, ñ, ł, ß,
...) and each language, the share p of that language's names spelt with it, smoothed; a name's
score for a language is the sum of log(p / (1 - p)) over the letters it has
(`features.letters_beyond_ascii`), added to the classifier's log-probabilities at
`ModelConfig.marks_weight`. That is a Bernoulli model's log-likelihood less its value for a name with
no such letter: a letter a name lacks says nothing, since users type "Muller" for "Müller"; counting
absent letters too (the full Bernoulli likelihood) was erratic on validation (+0.007 to -0.012
macro-F1 across weights), the letters present alone gained at every weight tried.

Fitted by counting, like `pipeline.charlm`, and kept in the model's state_dict as buffers, so it
travels with the weights and scores on whatever device the model is on.
"""

from __future__ import annotations

import torch

from pipeline.charlm import CountedTables, lookup_rows

# pseudo-count of each outcome (Jeffreys' prior): a letter a language never shows is unlikely, not impossible
SMOOTHING = 0.5


class LetterMarksModel(CountedTables):
    """Per-language Bernoulli model of which non-ASCII letters a name holds."""

    TABLES = ("codes", "present")

    def __init__(self, n_classes: int):
        super().__init__()
        self.n_classes = n_classes
        # the letters seen (sorted code points); per letter and language log p - log(1 - p), and a last
        # row of 0 for a letter never seen (no rows at all before fitting)
        self.register_buffer("codes", torch.zeros(0, dtype=torch.long))
        self.register_buffer("present", torch.zeros(0, n_classes))

    @property
    def fitted(self) -> bool:
        return len(self.present) > 0

    @torch.no_grad()
    def fit(self, marks: torch.Tensor, labels: torch.Tensor) -> LetterMarksModel:
        """Count, per language, the names spelt with each letter; replaces any earlier fit."""
        marks, labels = marks.cpu().long(), labels.cpu()
        device = self.present.device
        letters = marks[marks > 0]
        codes = torch.unique(letters) if len(letters) else torch.zeros(0, dtype=torch.long)
        names = torch.bincount(labels, minlength=self.n_classes).float()
        counts = torch.zeros(len(codes) + 1, self.n_classes)
        if len(codes):
            rows = torch.nonzero(marks > 0)[:, 0]
            at = torch.searchsorted(codes, marks[marks > 0])
            counts.index_put_((at, labels[rows]), torch.ones(len(rows)), accumulate=True)
        p = (counts[:-1] + SMOOTHING) / (names + 2 * SMOOTHING)
        self.codes = codes.to(device)
        self.present = torch.cat([p.log() - (-p).log1p(), torch.zeros(1, self.n_classes)]).to(device)
        return self

    def forward(self, marks: torch.Tensor) -> torch.Tensor:
        """Sum of log(p / (1 - p)) over each name's non-ASCII letters, (B, n_classes): 0 for a name
        with none; letters never seen in training count for nothing."""
        if not self.fitted:
            raise RuntimeError("the letter model has not been fitted: call fit() first")
        per_letter = lookup_rows(self.codes, self.present, marks.long().to(self.codes.device))  # (B, M, C)
        return per_letter.masked_fill((marks == 0).to(per_letter.device)[..., None], 0.0).sum(1)
