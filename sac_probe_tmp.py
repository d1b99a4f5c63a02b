import sys, torch, tempfile
sys.path.insert(0, ".")
from pathlib import Path
from tests.test_export import _agent, _prepare, _check, BOX_OBS, DICT_OBS
from drl.agents.sac import SAC, SACConfig
fails = 0
for seed in range(300):
    torch.manual_seed(seed)
    agent = _agent(SAC, SACConfig(normalize_obs=True, compile=False, critic_obs="policy"), BOX_OBS)
    _prepare(agent, BOX_OBS, list(agent.obs_normalizers.values()))
    try:
        _check(agent, BOX_OBS, Path(tempfile.mkdtemp()))
    except Exception as e:
        fails += 1; print(seed, type(e).__name__, str(e)[:300])
print("fails", fails)
