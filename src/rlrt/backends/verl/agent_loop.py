"""The RLT teacher's rollout on verl 0.9.1: an agent loop that continues the teacher's assistant turn.

Why a loop of our own. The RLT teacher is prompted with the question in the user turn and, in its *own* assistant
turn, the solution block and the opening explanation tag (``rlrt.tasks.rlt_format.teacher_prefix``); it then
writes the explanation. verl's ``single_turn_agent`` renders the messages through the Continuous Token builder,
which always ends the prompt with a fresh generation prompt (``add_generation_prompt=True``): the teacher would
start a second assistant turn after its solution block instead of continuing the open one, and its explanation
tokens would sit after other tokens than the local engine's teacher ever saw.

:class:`RLTTeacherAgentLoop` builds the prompt ids with the local engine's own function
(``rlrt.backends.local.rlt.teacher_prompt``: the chat's generation prompt, then the prefix, tokenized without
special tokens), so the teacher's prompt is the same ids on both backends (``tests/test_verl_agent_loop.py``),
asks verl's LLM server for the continuation, and returns it as an ``AgentLoopOutput`` (every response token is
the model's: mask 1). The question and solution come from the sample's ``extra_info``
(``rlrt.backends.verl.rlt.teacher_rl_rows`` writes them; the RLT reward reads them too).

A prompt longer than ``rollout.prompt_length`` raises instead of being left-truncated as verl's loops do: a cut
would drop the question and train the teacher on a prompt it was never meant to see. verl's dataset filters such
rows first (``data.filter_overlong_prompts``), so this is a guard, not a path.

verl finds the loop through ``rollout.agent.agent_loop_config_path`` (a YAML list of ``{name, _target_}`` that
each agent-loop worker instantiates with Hydra; ``rlrt.backends.verl.rlt.write_agent_loop_config``), not through
the plugin entry point: the workers import this module by its dotted name when they build the loop. NEVER RUN inside verl's Ray
workers (no GPU here); tested on CPU against verl's own ``AgentLoopBase`` with a stand-in server.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput

from rlrt.backends.local.rlt import encode, teacher_prompt

def teacher_prompt_ids(tokenizer, extra_info: dict[str, Any]) -> list[int]:
    """The teacher's generation prompt ids for one sample, from its ``extra_info`` (question, solution)."""
    missing = [k for k in ("question", "solution") if k not in (extra_info or {})]
    if missing:
        raise KeyError(f"RLT teacher rollout: the sample's extra_info lacks {missing} (rows come from "
                       f"rlrt.backends.verl.rlt.teacher_rl_rows)")
    return encode(tokenizer, teacher_prompt(tokenizer, str(extra_info["question"]), str(extra_info["solution"])))


class RLTTeacherAgentLoop(AgentLoopBase):
    """verl agent loop: one generation that continues the teacher's open assistant turn (module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prompt_length = int(self.rollout_config.prompt_length)
        self.response_length = int(self.rollout_config.response_length)

    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs) -> AgentLoopOutput:
        prompt_ids = teacher_prompt_ids(self.tokenizer, kwargs.get("extra_info") or {})
        if len(prompt_ids) > self.prompt_length:
            raise ValueError(f"RLT teacher prompt of {len(prompt_ids)} tokens exceeds rollout.prompt_length="
                             f"{self.prompt_length} (sample {(kwargs.get('extra_info') or {}).get('id')!r}); raise "
                             f"data.max_prompt_length or let data.filter_overlong_prompts drop it")
        out = await self.server_manager.generate(request_id=uuid4().hex, prompt_ids=prompt_ids,
                                                 sampling_params=sampling_params, priority=int(priority))
        response = list(out.token_ids)[: self.response_length]
        logprobs = list(out.log_probs)[: self.response_length] if out.log_probs else None
        preempted = out.num_preempted if out.num_preempted is not None else -1
        return AgentLoopOutput(prompt_ids=prompt_ids, response_ids=response, response_mask=[1] * len(response),
                               response_logprobs=logprobs, num_turns=2,
                               metrics=AgentLoopMetrics(num_preempted=preempted),
                               extra_fields={**out.extra_fields, "turn_scores": [], "tool_rewards": []})

