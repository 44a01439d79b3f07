"""Each method's loss against its published formula, written out here in plain torch on small
random tensors; projectors built from sizes against lightly's own heads; the teacher's moving
average."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from study.config import ModelConfig
from study.train.learner import Learner, Step, mlp
from study.train.methods import METHODS, method_params
from study.train.models import build_encoder

torch.manual_seed(0)
A, B = torch.randn(12, 6), torch.randn(12, 6)


def _loss(method: str, z0: torch.Tensor, z1: torch.Tensor, **params) -> float:
    """The method's loss on fixed projector outputs: a learner whose forward returns them."""

    class Fixed(torch.nn.Module):
        def forward(self, x):
            z = torch.cat([z0, z1])
            return None, z, None

    return float(METHODS[method].loss(Fixed(), [z0, z1], None,
                                      method_params(method, params), Step(0, 0, 1)))


def test_simclr_is_nt_xent():
    """Chen et al. 2020, eq. 1: l(i, j) = -log exp(s_ij / t) / sum_{k != i} exp(s_ik / t) over the
    2N views, s the cosine similarity; the loss is the mean over every anchor."""
    t = 0.3
    z = F.normalize(torch.cat([A, B]), dim=1)
    n = len(A)
    sim = z @ z.T / t
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = torch.cat([sim[i, :i], sim[i, i + 1:]])
        total += -(sim[i, j] - torch.logsumexp(others, 0))
    assert _loss("simclr", A, B, temperature=t) == pytest.approx(float(total / (2 * n)), rel=1e-5)


def test_vicreg_is_invariance_variance_covariance():
    """Bardes et al. 2022, eq. 6 as their code computes it: lambda * mean squared distance +
    mu * (v(Z) + v(Z')) / 2 + nu * (c(Z) + c(Z')), v = mean_j relu(1 - sqrt(Var z_j + 1e-4)),
    c = sum of squared off-diagonal covariances / d."""
    lam, mu, nu = 2.0, 3.0, 0.5

    def v(z):
        return torch.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean()

    def c(z):
        zc = z - z.mean(0)
        cov = zc.T @ zc / (len(z) - 1)
        return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / z.shape[1]

    want = lam * ((A - B) ** 2).mean() + mu * (v(A) + v(B)) / 2 + nu * (c(A) + c(B))
    got = _loss("vicreg", A, B, lambda_param=lam, mu_param=mu, nu_param=nu)
    assert got == pytest.approx(float(want), rel=1e-5)


def test_barlow_twins_is_the_cross_correlation_to_identity():
    """Zbontar et al. 2021, eq. 1-2: sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2, with C the
    cross-correlation of the batch-standardised outputs."""
    lam = 0.01
    za, zb = (A - A.mean(0)) / A.std(0, unbiased=False), (B - B.mean(0)) / B.std(0, unbiased=False)
    cc = za.T @ zb / len(A)
    want = ((1 - cc.diagonal()) ** 2).sum() + lam * (cc.pow(2).sum() - cc.diagonal().pow(2).sum())
    assert _loss("barlow_twins", A, B, lambda_param=lam) == pytest.approx(float(want), rel=1e-3)


def _learner(method: str, dims, **params):
    p = method_params(method, params)
    torch.manual_seed(1)
    learner = METHODS[method].learner(lambda: build_encoder(ModelConfig(projector_dims=dims), method, p, 4), dims, p)
    return learner, p


def test_byol_is_the_normalised_distance_to_the_teachers_other_view():
    """Grill et al. 2020, eq. 2: ||q(z) / |q(z)| - z'_t / |z'_t|||^2 = 2 - 2 cos, symmetrised over
    the views; here as -cos averaged over both (the same minimiser, lightly's form)."""
    learner, p = _learner("byol", (16, 8))
    x0, x1 = torch.randn(6, 3, 32, 32), torch.randn(6, 3, 32, 32)
    learner.train()
    got = float(METHODS["byol"].loss(learner, [x0, x1], None, p, Step(0, 0, 1)))
    with torch.no_grad():
        _, _, q = learner(torch.cat([x0, x1]))
        _, t = learner.teacher(torch.cat([x0, x1]))
    q0, q1, t0, t1 = (F.normalize(v, dim=1) for v in (*q.chunk(2), *t.chunk(2)))
    paper = 0.5 * (((q0 - t1) ** 2).sum(1).mean() + ((q1 - t0) ** 2).sum(1).mean())
    assert got == pytest.approx(float(paper) / 2 - 1, rel=1e-4)


def test_dino_is_the_cross_entropy_to_the_centred_sharpened_teacher():
    """Caron et al. 2021, eq. 1 and §3.1: sum over pairs of different views of
    -P_t(x) . log P_s(x'), P_t = softmax((g_t - c) / tau_t), P_s = softmax(g_s / tau_s); the centre
    c starts at 0 and moves to m c + (1 - m) mean(g_t) after the step."""
    learner, p = _learner("dino", (16, 8, 10), teacher_temp=0.07, student_temp=0.2, center_momentum=0.8)
    x0, x1 = torch.randn(6, 3, 32, 32), torch.randn(6, 3, 32, 32)
    learner.train()
    with torch.no_grad():
        _, s, _ = learner(torch.cat([x0, x1]))
        _, t = learner.teacher(torch.cat([x0, x1]))
    got = float(METHODS["dino"].loss(learner, [x0, x1], None, p, Step(0, 0, 1)))
    (s0, s1), (t0, t1) = s.chunk(2), t.chunk(2)

    def h(tt, ss):
        return -(F.softmax(tt / 0.07, dim=1) * F.log_softmax(ss / 0.2, dim=1)).sum(1).mean()

    assert got == pytest.approx(float((h(t0, s1) + h(t1, s0)) / 2), rel=1e-4)
    torch.testing.assert_close(learner.criterion.center.flatten(), 0.2 * t.mean(0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("last_bn,head", [(True, "SimCLRProjectionHead"), (False, "VICRegProjectionHead"),
                                          (False, "BYOLProjectionHead")])
def test_projector_from_sizes_is_lightlys_head(last_bn, head):
    """One hidden size repeated: the projector built from sizes is lightly's head, weight for weight."""
    from lightly.models.modules import heads

    layers = 2 if head == "BYOLProjectionHead" else 3
    torch.manual_seed(3)
    ours = mlp(10, [32] * (layers - 1) + [8], last_batch_norm=last_bn)
    torch.manual_seed(3)
    kwargs = {} if head == "BYOLProjectionHead" else {"num_layers": layers}
    theirs = getattr(heads, head)(10, 32, 8, **kwargs)
    assert [type(m) for m in ours.layers] == [type(m) for m in theirs.layers]
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_the_teacher_follows_by_moving_average_and_is_not_optimised():
    learner, p = _learner("byol", (16, 8), momentum=0.9)
    from study.config import TrainConfig
    from study.train import loop

    opt = loop.make_optimizer(learner, TrainConfig(lr=0.1))
    assert {id(q) for g in opt.param_groups for q in g["params"]}.isdisjoint(id(q) for q in learner.teacher.parameters())
    before = [q.clone() for q in learner.teacher.parameters()]
    for q in learner.encoder.parameters():
        q.data.add_(1.0)
    METHODS["byol"].after_step(learner, p, Step(0, 0, 10))  # momentum 0.9 at the first step
    for t0, t1, s in zip(before, learner.teacher.parameters(), learner.encoder.parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * s)


def test_learner_without_parts_is_the_encoder():
    learner, _ = _learner("simclr", (16, 8))
    assert learner.teacher is None and learner.predictor is None and isinstance(learner, Learner)
    x = torch.randn(4, 3, 32, 32)
    learner.eval()
    h, z, p = learner(x)
    h2, z2 = learner.encoder(x)
    assert p is None and torch.equal(h, h2) and torch.equal(z, z2)
