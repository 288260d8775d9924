import pytest
import torch
import torch.nn.functional as F

from mlstm4reco.mixture import MixtureLSTMNet, MixtureMLSTMNet
from mlstm4reco.representations import (
    CNNNet,
    GRUNet,
    LSTMNet,
    MLSTMNet,
    PoolNet,
    SASRecNet,
    recurrent,
)

NETS = {
    "lstm": lambda n, d: LSTMNet(n, d),
    "lstm-2layers": lambda n, d: LSTMNet(n, d, num_layers=2),
    "gru": lambda n, d: GRUNet(n, d),
    "mlstm-hidden": lambda n, d: MLSTMNet(n, d, state="hidden"),
    "mlstm-cell": lambda n, d: MLSTMNet(n, d, state="cell"),
    "mlstm-nobias": lambda n, d: MLSTMNet(n, d, multiplicative_bias=False),
    "mlstm-2layers": lambda n, d: MLSTMNet(n, d, num_layers=2),
    "mlstm-layernorm": lambda n, d: MLSTMNet(n, d, layer_norm=True),
    "pooling": lambda n, d: PoolNet(n, d),
    "cnn": lambda n, d: CNNNet(n, d),
    "cnn-dilated": lambda n, d: CNNNet(
        n, d, kernel_width=2, num_layers=3, dilation=[1, 2, 4], nonlinearity="relu", residual=False
    ),
    "sasrec": lambda n, d: SASRecNet(n, d, max_length=10),
    "sasrec-post-norm-2-heads": lambda n, d: SASRecNet(
        n, d, num_heads=2, num_blocks=1, norm_first=False, max_length=10
    ),
    "mixture-lstm": lambda n, d: MixtureLSTMNet(n, d, num_components=3),
    "mixture-mlstm": lambda n, d: MixtureMLSTMNet(n, d, num_components=2, state="cell"),
}
MIXTURES = (MixtureLSTMNet, MixtureMLSTMNet)


@pytest.fixture(params=sorted(NETS))
def net(request):
    torch.manual_seed(0)
    return NETS[request.param](20, 6)


def sequences(batch=4, length=7, num_items=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, num_items, (batch, length), generator=generator)


def test_protocol_shapes(net):
    seqs = sequences()
    all_reps, final = net.user_representation(seqs)
    per_position = (2 * net.num_components, 6) if isinstance(net, MIXTURES) else (6,)
    assert all_reps.shape == (4, *per_position, 7)
    assert final.shape == (4, *per_position)
    scores = net(all_reps, seqs)
    assert scores.shape == (4, 7)
    # Spotlight's predict: one final state expanded over candidate items (n, 1).
    items = torch.arange(20).reshape(-1, 1)
    spotlight_scores = net(final[:1].expand(20, *per_position), items)
    assert spotlight_scores.shape == (20,)
    torch.testing.assert_close(spotlight_scores, net.score_all(final[:1])[0])


def test_scores_follow_the_formula(net):
    """Dot product plus bias; for mixtures the attention-weighted sum of taste scores,
    written as a loop over components."""
    with torch.no_grad():
        net.item_biases.weight.normal_()
    seqs = sequences()
    all_reps, _ = net.user_representation(seqs)
    if isinstance(net, MIXTURES):
        k = net.num_components
        scores = net(all_reps, seqs)
        for b in range(4):
            for t in range(7):
                e = net.item_embeddings.weight[seqs[b, t]]
                logits = [all_reps[b, k + c, :, t] @ e for c in range(k)]
                total = sum(torch.exp(a) for a in logits)
                expected = net.item_biases.weight[seqs[b, t], 0]
                for c in range(k):
                    expected = expected + torch.exp(logits[c]) / total * (all_reps[b, c, :, t] @ e)
                torch.testing.assert_close(scores[b, t], expected)
        return
    scores = net(all_reps, seqs)
    for b in range(4):
        for t in range(7):
            item = seqs[b, t]
            expected = all_reps[:, :, t][b] @ net.item_embeddings.weight[item]
            expected = expected + net.item_biases.weight[item, 0]
            torch.testing.assert_close(scores[b, t], expected)


def test_causality(net):
    seqs = sequences()
    reps, final = net.user_representation(seqs)
    for t in range(7):
        changed = seqs.clone()
        changed[:, t] = (changed[:, t] % 19) + 1  # another real item
        reps_changed, final_changed = net.user_representation(changed)
        # Positions up to t have not seen item t; later ones and the final state have.
        torch.testing.assert_close(reps_changed[..., : t + 1], reps[..., : t + 1])
        # The next position has seen the change (the final state, after the last item).
        after = final_changed if t == 6 else reps_changed[..., t + 1]
        assert not torch.allclose(after, final if t == 6 else reps[..., t + 1])


def test_first_position_has_seen_nothing(net):
    reps_a, _ = net.user_representation(sequences(seed=1))
    reps_b, _ = net.user_representation(sequences(seed=2))
    torch.testing.assert_close(reps_a[..., 0], reps_b[..., 0])


def test_final_is_state_after_last_item(net):
    seqs = sequences()
    _, final = net.user_representation(seqs)
    longer = torch.cat([seqs, torch.ones(4, 1, dtype=torch.long)], dim=1)
    reps_longer, _ = net.user_representation(longer)
    torch.testing.assert_close(reps_longer[..., -1], final)


def test_padding(net):
    emb = net.item_embeddings.weight
    assert torch.all(emb[0] == 0)
    assert torch.all(net.item_biases.weight == 0)
    std = emb[1:].std().item()
    assert 0.5 / 6 < std < 2.0 / 6  # normal with std 1 / embedding_dim
    padded = torch.tensor([[0, 0, 0, 3, 4], [0, 0, 0, 0, 5]])
    reps, final = net.user_representation(padded)
    assert torch.isfinite(reps).all() and torch.isfinite(final).all()
    # A padded position scores 0: the padding embedding and bias are zero.
    assert torch.all(net(reps, padded)[padded == 0] == 0)
    # More left padding does not change the final state of pooling (recurrent and
    # convolutional nets do compute over padding steps).
    if isinstance(net, PoolNet):
        _, final_longer = net.user_representation(F.pad(padded, (3, 0)))
        torch.testing.assert_close(final_longer, final)


def test_every_parameter_gets_a_gradient(net):
    seqs = sequences()
    reps, final = net.user_representation(seqs)
    loss = net(reps, seqs).sum() + net(reps, torch.roll(seqs, 1, 0)).sum() + final.sum()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_input(net):
    with pytest.raises(ValueError, match=r"item ids in \[0, 20\), got ids from 0 to 20"):
        net.user_representation(torch.tensor([[0, 20]]))
    with pytest.raises(ValueError, match=r"item ids in \[0, 20\), got ids from -1 to 3"):
        net.user_representation(torch.tensor([[-1, 3]]))
    with pytest.raises(ValueError, match="expected a 2-D .* got 1-D"):
        net.user_representation(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="integer item ids"):
        net.user_representation(torch.ones(2, 3))


def test_constructor_checks():
    with pytest.raises(ValueError, match="state must be one of"):
        MLSTMNet(10, state="memory")
    with pytest.raises(ValueError, match="num_items must be at least 2"):
        LSTMNet(1)
    shared = torch.nn.Embedding(10, 8, padding_idx=0)
    with pytest.raises(ValueError, match="dimension 8, expected embedding_dim=4"):
        MLSTMNet(10, 4, item_embedding_layer=shared)
    assert MLSTMNet(10, 8, item_embedding_layer=shared).item_embeddings is shared


def test_pooling_is_the_mean_of_the_items_before():
    net = PoolNet(20, 4)
    seqs = torch.tensor([[0, 0, 3, 5, 7], [1, 2, 0, 4, 4]])  # padding in the middle too
    reps, final = net.user_representation(seqs)
    emb = net.item_embeddings.weight
    for b in range(2):
        for t in range(6):
            seen = [i for i in seqs[b, :t].tolist() if i != 0]
            expected = torch.stack([emb[i] for i in seen]).mean(0) if seen else torch.zeros(4)
            got = reps[b, :, t] if t < 5 else final[b]
            torch.testing.assert_close(got, expected)


def test_cnn_receptive_field():
    """With kernel 2 and dilations [1, 2], position t sees items t-4..t-1 and no earlier."""
    torch.manual_seed(0)
    net = CNNNet(20, 4, kernel_width=2, num_layers=2, dilation=[1, 2])
    seqs = sequences(batch=1, length=10)
    reps, _ = net.user_representation(seqs)
    changed = seqs.clone()
    changed[0, 2] = changed[0, 2] % 19 + 1
    reps_changed, _ = net.user_representation(changed)
    differs = [not torch.allclose(reps[..., t], reps_changed[..., t]) for t in range(10)]
    assert differs == [t in (3, 4, 5, 6) for t in range(10)]


def test_lstmnet_is_spotlights_architecture():
    """State at position 0 is the LSTM's output after one zero input from zero state."""
    torch.manual_seed(0)
    net = LSTMNet(20, 6)
    reps, _ = net.user_representation(sequences())
    expected, _ = net.lstm(torch.zeros(1, 1, 6))
    torch.testing.assert_close(reps[:, :, 0], expected[0, 0].expand(4, 6))


def test_grunet_steps_a_gru_cell_from_a_zero_input():
    torch.manual_seed(0)
    net = GRUNet(20, 6)
    seqs = sequences()
    reps, _ = net.user_representation(seqs)
    cell = torch.nn.GRUCell(6, 6)
    cell.load_state_dict({k[:-3]: v for k, v in net.gru.state_dict().items()})  # drop "_l0"
    inputs = torch.cat([torch.zeros(4, 1, 6), net.item_embeddings(seqs)], dim=1)
    h = torch.zeros(4, 6)
    for t in range(7):
        h = cell(inputs[:, t], h)
        torch.testing.assert_close(reps[:, :, t], h)


@pytest.mark.parametrize("net_class", [LSTMNet, GRUNet])
@pytest.mark.parametrize("leaves", [True, False, None])
def test_recurrent_nets_under_bfloat16_autocast_on_the_cpu(net_class, leaves, monkeypatch):
    """Under CPU bfloat16 autocast the recurrent layer runs: in bfloat16 where oneDNN has
    bfloat16 kernels (states rounded), else outside autocast in float32 (states exactly the
    float32 ones; on AVX2-only CPUs oneDNN refuses bfloat16 LSTMs). ``leaves`` forces
    either branch, None leaves it to this machine's CPU."""
    if leaves is not None:
        monkeypatch.setattr(recurrent, "recurrent_leaves_autocast", lambda x: leaves)
    if leaves is False and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU's oneDNN has no bfloat16 recurrent kernels")
    torch.manual_seed(0)
    net = net_class(20, 6)
    seqs = sequences()
    full, _ = net.user_representation(seqs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = net.user_representation(seqs)
        expected_float32 = recurrent.recurrent_leaves_autocast(torch.zeros(1))
    assert expected_float32 == (
        leaves if leaves is not None else not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
    if expected_float32:
        assert low.dtype == torch.float32 and torch.equal(low, full)
    else:
        assert not torch.equal(low.float(), full)
        torch.testing.assert_close(low.float(), full, rtol=5e-2, atol=5e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda(net):
    seqs = sequences()
    reps_cpu, _ = net.user_representation(seqs)
    reps_gpu, _ = net.cuda().user_representation(seqs.cuda())
    torch.testing.assert_close(reps_gpu.cpu(), reps_cpu, rtol=1e-4, atol=1e-4)


def test_untied_output_embeddings_and_dropout():
    torch.manual_seed(0)
    net = MLSTMNet(20, 6, tie_embeddings=False, dropout=0.5)
    seqs = sequences()
    net.train(False)
    reps, final = net.user_representation(seqs)
    again, _ = net.user_representation(seqs)
    torch.testing.assert_close(reps, again)  # no dropout in evaluation
    # Scores use the output embeddings, which are not the input ones.
    expected = final @ net.output_embeddings.weight.t() + net.item_biases.weight.t()
    torch.testing.assert_close(net.score_all(final), expected)
    net.train(True)
    train_reps, _ = net.user_representation(seqs)
    assert (train_reps == 0).float().mean() > 0.3  # about half the state entries dropped
    net(train_reps, seqs).sum().backward()
    assert net.output_embeddings.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        LSTMNet(20, 4, dropout=1.5)


def test_every_representation_states_the_contract():
    """The registered nets follow both protocols; a net with only Spotlight's two calls
    follows the first only (and is then scored one sequence at a time)."""
    from mlstm4reco.representations import ScoresItems, SequenceRepresentation
    from mlstm4reco.sequence_model import REPRESENTATIONS

    for name, cls in REPRESENTATIONS.items():
        net = cls(10, 4)
        assert isinstance(net, SequenceRepresentation) and isinstance(net, ScoresItems), name

    class SpotlightLike(torch.nn.Module):
        def user_representation(self, item_sequences):
            return None, None

        def forward(self, user_representations, targets):
            return None

    assert isinstance(SpotlightLike(), SequenceRepresentation)
    assert not isinstance(SpotlightLike(), ScoresItems)
    assert not isinstance(torch.nn.Linear(2, 2), SequenceRepresentation)


@pytest.mark.parametrize("norm_first", [True, False])
def test_sasrec_attention_never_reads_a_padded_or_later_step(norm_first):
    """Every block's attention weights are exactly 0 from a step to any later step and to
    any padded step (the zero first step is always read); a row sums to 1."""
    torch.manual_seed(0)
    net = SASRecNet(20, 8, num_heads=2, max_length=12, norm_first=norm_first)
    padded = torch.tensor([[0, 0, 0, 3, 4, 5], [0, 0, 0, 0, 0, 5], [1, 2, 3, 4, 5, 6]])
    for weights in net.attention_weights(padded):
        steps = weights.shape[-1]
        for b in range(3):
            real = [0] + [t + 1 for t in range(6) if padded[b, t] != 0]  # steps with a key
            for q in range(steps):
                for k in range(steps):
                    if k > q or k not in real:
                        assert weights[b, q, k] == 0, (b, q, k)
                torch.testing.assert_close(weights[b, q].sum(), torch.tensor(1.0))
    # and so what a padded step holds cannot matter: a padding embedding changed, no state moves
    reps, final = net.user_representation(padded)
    with torch.no_grad():
        net.item_embeddings.weight[0] = 5.0
    reps_changed, final_changed = net.user_representation(padded)
    real = padded != 0
    torch.testing.assert_close(final_changed, final)
    torch.testing.assert_close(reps_changed.transpose(1, 2)[real], reps.transpose(1, 2)[real])


def test_sasrec_checks_its_options():
    with pytest.raises(ValueError, match="num_heads=3 must divide embedding_dim=8"):
        SASRecNet(20, 8, num_heads=3)
    with pytest.raises(ValueError, match="must be positive"):
        SASRecNet(20, 8, num_blocks=0)
    with pytest.raises(
        ValueError, match="item_sequences of 11 items are longer than max_length=10"
    ):
        SASRecNet(20, 8, max_length=10).user_representation(torch.ones(2, 11, dtype=torch.long))
