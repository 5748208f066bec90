"""Real trainers on an `airgen export` folder, in a process of their own: `python tests/trainers.py KIND DIR` trains
the bundled 135M model for a few steps on CPU and prints one JSON line (the losses, what the trainer saw).

KIND: dpo (TRL's DPOTrainer on `--format dpo`), sft (TRL's SFTTrainer on `--format prompt-completion`), grpo (TRL's
GRPOTrainer on `--format rlvr`, rewarded by `airgen.checks.reward` as it is).
"""
import json
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# datasets caches a local folder by its name and config, not by its files: a fresh cache reads this export.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp()


def main(kind: str, folder: str) -> None:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from airgen.engines.models import embedded_model_path

    torch.manual_seed(0)
    path = str(embedded_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    data = datasets.load_dataset(folder, split="level_1")  # the folder itself, through its card
    out = tempfile.mkdtemp()
    common = dict(output_dir=out, per_device_train_batch_size=2, logging_steps=1, report_to=[], save_strategy="no",
                  use_cpu=True, learning_rate=5e-5)
    if kind == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        from airgen.checks import reward

        rewards: list[float] = []

        def watched(**batch):  # airgen's reward, with what it gave noted
            given = reward(**batch)
            rewards.extend(given)
            return given

        watched.__name__ = "airgen_checks"
        trainer = GRPOTrainer(model=model, reward_funcs=[watched], train_dataset=data, processing_class=tokenizer,
                              args=GRPOConfig(max_steps=2, num_generations=2, max_completion_length=24,
                                              generation_batch_size=2, **common))
        seen = {"checks": data[0]["checks"], "rewards": rewards}
    elif kind == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=model, args=DPOConfig(max_steps=2, max_length=384, **common),
                             train_dataset=data, processing_class=tokenizer)
        seen = {"conversational": isinstance(data[0]["prompt"], list)}
    else:
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(model=model, args=SFTConfig(max_steps=3, max_length=384, **common),
                             train_dataset=data, processing_class=tokenizer)
        row = trainer.train_dataset[0]
        # The tokens the loss is taken on: those whose label is not -100 (or, in older TRL, its completion mask).
        trained = (sum(1 for label in row["labels"] if label != -100) if "labels" in row
                   else sum(row.get("completion_mask") or []))
        seen = {"tokens": len(row["input_ids"]), "completion_tokens": trained}
    trainer.train()
    losses = [round(h["loss"], 6) for h in trainer.state.log_history if "loss" in h]
    if kind == "grpo":
        seen["logged_rewards"] = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    print(json.dumps({"kind": kind, "rows": len(data), "losses": losses, **seen}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
