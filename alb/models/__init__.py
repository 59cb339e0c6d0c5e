"""Model adapters: turn a pool into the arrays strategies ask for (docs/concepts.md, "The seam")."""


def make_adapter(task: str, model_cfg, trainer_cfg, data, device, hook=None, num_workers: int = 0):
    """The adapter for `task`, honouring the strategy's training hook: an `EnsembleHook`
    gives K members (alb.models.ensemble); any other hook goes to the adapter itself."""
    from alb.hooks import EnsembleHook
    from alb.models.classification_adapter import ClassifierAdapter
    from alb.models.detection_adapter import DetectorAdapter
    from alb.models.ensemble import EnsembleAdapter

    adapter = {"classification": ClassifierAdapter, "detection": DetectorAdapter}[task]
    if isinstance(hook, EnsembleHook):
        return EnsembleAdapter([adapter(model_cfg, trainer_cfg, data, device, None, num_workers)
                                for _ in range(hook.members)])
    return adapter(model_cfg, trainer_cfg, data, device, hook, num_workers)


def check_model_config(task: str, model_cfg) -> None:
    """The model node's settings against its class's signature (names and plain types), before
    any folder is claimed: `model.width=abc` is one line, not an error from inside the network."""
    from alb.config import check_node
    if task == "detection":
        from alb.models.detection_adapter import detector_kwargs
        check_node(detector_kwargs(model_cfg), "model")
    else:
        check_node(model_cfg, "model")
