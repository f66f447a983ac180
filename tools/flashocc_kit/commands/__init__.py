"""One module per `kit.py` command. Each declares its options (`register`) and runs them, handing the work
to the library modules of the package; nothing below imports from here."""

from . import (
    apply,
    bench,
    check_data,
    contract,
    coverage,
    doctor,
    export,
    gate,
    launch,
    series,
    setup,
    sources,
    stacks,
    status,
    summarize,
    synth,
    test,
)

# In the order `kit.py --help` lists them: the patch workflow, the environment, data, runs, checks.
COMMANDS = (sources, apply, status, export, series, setup, doctor, stacks, synth, check_data, launch, summarize,
            gate, test, coverage, contract, bench)
