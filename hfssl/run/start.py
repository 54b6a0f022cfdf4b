"""The start of every run that writes a folder: may it write there, and where does it continue from?"""

from pathlib import Path

from .checkpoints import list_checkpoints, read_trainer_state, resolve_checkpoint
from .lock import acquire_output_lock
from .output import check_output_dir, set_aside_previous
from .resume import check_resume


def prepare_run(args, inputs=(), *, recorded: dict | None = None, is_main: bool = True) -> Path | None:
    """Check the output folder (`hfssl.run.output.check_output_dir`), take its lock (`hfssl.run.lock`), then either
    resolve and check the checkpoint to resume from (`hfssl.run.resume.check_resume`) or, with
    --overwrite_output_dir, set the earlier run aside.

    inputs: the folders the run reads (its model, tokenizer), never written into. recorded: the arguments as the
    run records them (default args.to_dict()), compared with the checkpoint's. Every process calls this; only the
    main one moves files. Returns the checkpoint to resume from, or None for a new run.
    """
    resume = getattr(args, "resume_from_checkpoint", None)
    check_output_dir(
        args.output_dir,
        resume=bool(resume),
        overwrite=args.overwrite_output_dir,
        inputs=inputs,
        has_checkpoints=hasattr(args, "resume_from_checkpoint") and bool(list_checkpoints(args.output_dir)),
    )
    if is_main:  # before anything is moved or resumed: a second run into this folder stops here
        acquire_output_lock(args.output_dir)
    if resume:
        checkpoint = resolve_checkpoint(resume, args.output_dir)
        check_resume(
            checkpoint,
            recorded or args.to_dict(),
            args.RESUME_SAFE,
            read_trainer_state(checkpoint).global_step,
            added=args.ADDED_ARGUMENTS,
        )
        return checkpoint
    if args.overwrite_output_dir and is_main:
        set_aside_previous(args.output_dir)
    return None
