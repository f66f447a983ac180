"""One training run of the patched FlashOCC through torchrun: what `kit.py launch` (behind test/*.sh) does.

run.py          what to run: the request, the config's defaults, the case name, the --cfg-options, --profile
commands.py     the torchrun command lines and the environment of the ranks
preflight.py    the checks before any rank starts (work dir, devices, data), and the port's device decision
nodes.py        several nodes: NNODES and friends parsed once, the launchers' meeting before torchrun
watch.py        the stall watch: each launch's heartbeats, the limits
signals.py      signals to this launcher's descendants only
stream.py       running a command: output to the console and a log, stalls ended, why a run failed
checkpoints.py  resume points and the legs of a run
execute.py      the whole run: the smoke set, training, evaluation, the summaries
"""
