"""One training run of the patched FlashOCC through torchrun: what `kit.py launch` (behind test/*.sh) does.

run.py       what to run: the request, the config's defaults, the case name, the --cfg-options
commands.py  the torchrun command lines and the environment of the ranks
stream.py    running them: output to the console and a log, signals, why a run failed
execute.py   the whole run: the smoke set, training, evaluation, the summaries
"""
