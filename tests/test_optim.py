"""The project's Adam: torch's arithmetic and schedule, without importing torch's compiler."""

import torch
from helpers import run_fresh_python

from streamcomp.optim import Adam


def _trained(make, steps: int = 40) -> torch.Tensor:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    x, y = torch.randn(64, 5), torch.randn(64, 1)
    opt, sched = make(net)
    for _ in range(steps):
        loss = ((net(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def test_steps_match_torch_adam_and_its_cosine_schedule_bit_for_bit():
    def groups(net):
        return [{"params": net[0].parameters(), "lr": 0.03}, {"params": net[2].parameters()}]

    def torch_made(net):
        opt = torch.optim.Adam(groups(net), lr=0.01)
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, 40, eta_min=0.001)

    ours = _trained(lambda net: (Adam(groups(net), 0.01, steps=40, eta_min=0.001), None))
    assert torch.equal(_trained(torch_made), ours)
    plain = _trained(lambda net: (torch.optim.Adam(net.parameters(), lr=0.01), None))
    assert torch.equal(plain, _trained(lambda net: (Adam(net.parameters(), 0.01), None)))


def test_a_fit_does_not_import_torchs_compiler():
    code = (
        "import sys, torch; from streamcomp.optim import Adam; p = torch.nn.Parameter(torch.ones(3)); "
        "o = Adam([p], 0.1, steps=5); (p ** 2).sum().backward(); o.step(); "
        "print(any(m.startswith('torch._dynamo') for m in sys.modules))"
    )
    out = run_fresh_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"]
