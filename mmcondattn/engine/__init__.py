"""Runner-facing parts: launch checks (:mod:`.launch`) and the condition-number monitor
hook (:class:`ConditionMonitorHook`, registered in mmengine's ``HOOKS``)."""
from .monitor_hook import ConditionMonitorHook

__all__ = ['ConditionMonitorHook']
