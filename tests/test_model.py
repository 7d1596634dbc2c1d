"""The classifier: every cell, both inputs, both poolings, packing, the n-gram branch, ensembles."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.config import ModelConfig
from pipeline.features import encode_names
from pipeline.model import CharClassifier, hashed_ngrams

NAMES = ["Abe", "Nakamura", "O'Neil", "Xu", "de la Cruz"]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("input_", ["embedding", "onehot"])
@pytest.mark.parametrize("pooling", ["last", "mean_max"])
def test_every_variant_gives_logits_per_name(cell, input_, pooling):
    torch.manual_seed(0)
    config = ModelConfig(cell=cell, input=input_, pooling=pooling, embedding_dim=8, hidden_size=16, num_layers=2,
                         bidirectional=pooling == "mean_max", ngram_buckets=64 if cell == "gru" else 0)
    model = CharClassifier(config, n_classes=5)
    tokens, lengths = encode_names(NAMES)
    logits = model(tokens, lengths)
    assert logits.shape == (5, 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("config", [ModelConfig(), ModelConfig.notebook(),
                                    ModelConfig(cell="lstm", pooling="last", bidirectional=True, num_layers=2)])
def test_padding_does_not_change_a_names_logits(config):
    torch.manual_seed(0)
    model = CharClassifier(config, n_classes=4).eval()
    tokens, lengths = encode_names(NAMES)
    wide = torch.cat([tokens, torch.zeros(len(NAMES), 7, dtype=torch.uint8)], dim=1)
    with torch.no_grad():
        together = model(wide, lengths)
        alone = torch.cat([model(tokens[i:i + 1, :lengths[i]], lengths[i:i + 1]) for i in range(len(NAMES))])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_notebook_configuration_is_the_tutorials_char_rnn():
    config = ModelConfig.notebook()
    model = CharClassifier(config, n_classes=18)
    assert model.embedding is None and model.ngrams is None and len(model.others) == 0
    assert isinstance(model.rnn, nn.RNN) and model.rnn.input_size == 58 and model.rnn.hidden_size == 128
    assert not model.rnn.bidirectional and model.rnn.num_layers == 1
    reference = nn.ModuleList([nn.RNN(58, 128), nn.Linear(128, 18)])  # CharRNN's rnn + h2o
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    # the final hidden state of a one-hot RNN, as the notebook reads it, gives the same logits
    tokens, lengths = encode_names(["Albert"])
    onehot = torch.eye(58)[tokens[0].long() - 1].unsqueeze(1)  # lineToTensor: (len, 1, 58)
    reference[0].load_state_dict(model.rnn.state_dict())
    reference[1].load_state_dict(model.head.state_dict())
    with torch.no_grad():
        expected = reference[1](reference[0](onehot)[1][0])
        torch.testing.assert_close(model.eval()(tokens, lengths), expected)


def test_hashed_ngrams_cover_every_1_to_4_gram_with_boundaries_and_ignore_case():
    tokens, lengths = encode_names(["Abe", "abe", "Xu", ""])
    ids, mask = hashed_ngrams(tokens, lengths, n_max=4, buckets=1 << 20)
    # "abe" framed as <abe>: 5 symbols -> 5 + 4 + 3 + 2 grams
    assert mask.sum(1).tolist() == [14, 14, 10, 3]
    assert torch.equal(ids[0][mask[0]], ids[1][mask[1]])
    assert ids.min() >= 0 and ids.max() < 1 << 20
    assert len(set(ids[0][mask[0]].tolist())) == 14  # distinct n-grams, no collisions at this size


def test_ensemble_returns_mean_log_probabilities_of_its_members():
    torch.manual_seed(0)
    model = CharClassifier(ModelConfig(embedding_dim=8, hidden_size=8, members=3, ngram_buckets=32), 4).eval()
    tokens, lengths = encode_names(NAMES)
    members = model.member_logits(tokens, lengths)
    assert len(members) == 3 and not torch.equal(members[0], members[1])  # own initialisation each
    expected = torch.stack([m.log_softmax(-1) for m in members]).mean(0)
    torch.testing.assert_close(model(tokens, lengths), expected)
    assert model.head.out_features == 4
