"""Run the evaluate stage (``rlrt.stages.evaluate.main``) unchanged, recording what its vLLM engine was asked and
answered: ``python tests/vllm_eval_probe.py RECORD.json <the stage's arguments>``.

Run in the vLLM environment (``make vllm-cpu-env``) by tests/test_vllm_cpu_eval.py. The engine is the stage's own
(``rlrt.backends.verl.evaluate.default_llm_factory``: the real ``vllm.LLM``); the probe only wraps its
``generate`` to write, per call, the prompts, their token ids and every sample's text and token ids to RECORD.json,
so a test can compare each problem's answer with the local engine's, not only the JSON's first example. The
``__main__`` guard is needed: vLLM starts its engine in a spawned process, which imports this file again.
"""

from __future__ import annotations

import json
import sys


def main(record: str, argv: list[str]) -> None:
    import rlrt.backends.verl.evaluate as ve
    from rlrt.stages import evaluate as stage

    real = ve.default_llm_factory
    calls: list[dict] = []
    engine: dict = {}

    class Recorded:
        def __init__(self, llm):
            self.llm = llm

        def generate(self, prompts, sampling_params):
            outputs = self.llm.generate(prompts, sampling_params)
            calls.append({"prompts": list(prompts),
                          "prompt_token_ids": [list(o.prompt_token_ids) for o in outputs],
                          "texts": [[s.text for s in o.outputs] for o in outputs],
                          "token_ids": [[list(s.token_ids) for s in o.outputs] for o in outputs]})
            return outputs

    def factory(model, **kw):
        engine.update(model=model, **kw)
        return Recorded(real(model, **kw))

    ve.default_llm_factory = factory
    stage.main(argv)
    import vllm

    with open(record, "w") as f:
        json.dump({"vllm": vllm.__version__, "engine": engine, "calls": calls}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
