"""The per-language Kneser-Ney n-gram models: exact against a plain reference, batched like the
network, saved and loaded with it, and averaged with it in the classifier."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import torch
import torch.nn.functional as F

from pipeline.charlm import CharNgramLM
from pipeline.config import ModelConfig
from pipeline.features import encode_names
from pipeline.model import CharClassifier

TRAIN = {0: ["Nakamura", "Tanaka", "Yamamoto", "Nakata", "Kimura"],
         1: ["Ivanov", "Petrov", "Smirnov", "Ivanova", "Popov"],
         2: ["Rossi", "Russo", "Bianchi", "Romano", "Colombo"]}
QUERIES = ["Nakamoto", "Ivanchenko", "Rossini", "Xu", "O'Neil", "tanaka", "Zzyzx"]


def reference_log_likelihood(names: list[str], query: str, order: int, discount: float) -> float:
    """Interpolated Kneser-Ney written out the textbook way, one dict per order, for comparison."""
    grams = Counter()
    for name in names:
        s = "^" * (order - 1) + name.lower() + "$"
        grams.update(s[i - order + 1:i + 1] for i in range(order - 1, len(s)))
    counts = [defaultdict(Counter) for _ in range(order)]  # counts[k][context of k symbols][symbol]
    for gram, n in grams.items():
        counts[order - 1][gram[:-1]][gram[-1]] += n
    for k in range(order - 2, -1, -1):  # continuation counts: distinct left extensions
        for context, following in counts[k + 1].items():
            for symbol in following:
                counts[k][context[1:]][symbol] += 1
    s = "^" * (order - 1) + query.lower() + "$"
    total = 0.0
    for i in range(order - 1, len(s)):
        p = 1 / 33
        for k in range(order):
            following = counts[k].get(s[i - k:i] if k else "")
            if not following:
                break
            n = sum(following.values())
            p = max(following[s[i]] - discount, 0) / n + discount * len(following) / n * p
        total += math.log(p)
    return total


def fitted(order: int = 4, discount: float = 0.75) -> CharNgramLM:
    names = [n for names in TRAIN.values() for n in names]
    labels = torch.tensor([c for c, names in TRAIN.items() for _ in names])
    tokens, lengths = encode_names(names)
    return CharNgramLM(order, discount, n_classes=3).fit(tokens, lengths, labels)


def test_scores_are_the_textbook_kneser_ney_likelihoods_plus_the_log_prior():
    for order, discount in ((2, 0.5), (4, 0.75), (5, 0.9)):
        lm = fitted(order, discount)
        tokens, lengths = encode_names(QUERIES)
        scores = lm(tokens, lengths)
        expected = torch.tensor([[reference_log_likelihood(TRAIN[c], q, order, discount) + math.log(5 / 15)
                                  for c in range(3)] for q in QUERIES])
        torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-4)


def test_it_tells_the_languages_apart_ignoring_case_and_padding():
    lm = fitted()
    tokens, lengths = encode_names(["Nakamoto", "Ivanchenko", "Rossini", "NAKAMOTO"])
    wide = torch.cat([tokens, torch.zeros(4, 9, dtype=torch.uint8)], dim=1)
    scores = lm(tokens, lengths)
    assert scores.argmax(1).tolist() == [0, 1, 2, 0]
    torch.testing.assert_close(scores[3], scores[0])  # lowercased, as its counts are
    torch.testing.assert_close(lm(wide, lengths), scores)


def test_tables_of_any_size_load_into_a_fresh_instance():
    lm = fitted()
    fresh = CharNgramLM(4, 0.75, n_classes=3)
    assert not fresh.fitted
    fresh.load_state_dict(lm.state_dict())
    tokens, lengths = encode_names(QUERIES)
    assert fresh.fitted and torch.equal(fresh(tokens, lengths), lm(tokens, lengths))


def test_classifier_averages_the_network_and_the_ngram_models_after_fitting():
    torch.manual_seed(0)
    config = ModelConfig(embedding_dim=8, hidden_size=16, ngram_buckets=64, charlm_weight=0.3, members=2)
    model = CharClassifier(config, n_classes=3).eval()
    assert all(m.charlm is None for m in model.others)  # one set of n-gram models for the whole ensemble
    tokens, lengths = encode_names(QUERIES)
    with torch.no_grad():
        network = model(tokens, lengths)  # not fitted yet: the network alone
        names = [n for names in TRAIN.values() for n in names]
        t, n = encode_names(names)
        model.fit_counts(t, n, torch.tensor([c for c, names in TRAIN.items() for _ in names]))
        mixed = model(tokens, lengths)
        expected = 0.7 * F.log_softmax(network, -1) + 0.3 * F.log_softmax(model.charlm(tokens, lengths), -1)
    torch.testing.assert_close(mixed, expected)
    assert CharClassifier(ModelConfig.notebook(), 3).charlm is None
