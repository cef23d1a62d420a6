"""Beam's DaskRunner, made safe for bounded pipelines with several outputs per step.

`BoundedDaskRunner` is Beam's `DaskRunner` (``apache_beam.runners.dask``) with
its ParDo, GroupByKey and visitor translations replaced, because as shipped
(Beam 2.77) it:

* hands every output of a multi-output ParDo (``with_outputs``,
  ``beam.Partition``, RunInference's ``with_exception_handling``) to every
  consumer of any of them, so good results and failures are mixed;
* drops what a DoFn emits in ``finish_bundle`` (``BatchElements`` emits its
  last partial batch there: RunInference silently loses articles);
* strips element timestamps and windows after every ParDo;
* computes only the bag of the last transform visited, so other branches of
  the graph never run;
* runs stateful DoFns without state (they fail on an assertion) and treats
  ``WindowInto`` and the per-window part of GroupByKey as no-ops.

Here every ParDo emits (tag, WindowedValue) pairs and each consumer takes its
own tag; finish_bundle output is kept; every sink of the graph is computed;
and what this runner cannot honour (state and timers, non-global windowing,
transforms it has no translation for) is refused when the job is built, never
run wrongly. Side inputs work as in Beam's DaskRunner. Beam metrics are not
collected (`DaskRunnerResult.metrics` is not implemented upstream).

`local_cluster` starts a ``dask.distributed`` LocalCluster of worker
processes for a run without a scheduler address.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import typing
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import dask
import dask.distributed as ddist
from apache_beam import pvalue
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
from apache_beam.runners.dask import overrides as dask_overrides_module
from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner, DaskRunnerResult
from apache_beam.runners.dask.transform_evaluator import (
    Create,
    DaskBagWindowedIterator,
    Flatten,
    OneReceiver,
    defenestrate,
    get_windowed_value,
)
from apache_beam.transforms import userstate
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

__all__ = ["BoundedDaskResult", "BoundedDaskRunner", "UnsupportedOnDask", "local_cluster"]

logger = logging.getLogger(__name__)


class UnsupportedOnDask(ValueError):
    """The pipeline needs something this runner cannot do (state, timers, windows)."""


def _run_bundle(
    items: Any, fn: beam.DoFn, label: str, window_fn: Any, side_inputs: Any, args, kwargs
) -> list[tuple[str | None, WindowedValue]]:
    """Run one DoFn over one Dask partition (a bundle); every output as (tag, value)."""
    receivers = OneReceiver()
    handler = _OutputHandler(
        window_fn=window_fn,
        main_receivers=receivers[None],
        tagged_receivers=receivers,
        per_element_output_counter=None,
        output_batch_converter=None,
        process_yields_batches=False,
        process_batch_yields_elements=False,
    )
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn),
        handler,
        context=DoFnContext(label, state=None),
        side_inputs=side_inputs,
        input_args=args,
        input_kwargs=kwargs,
        user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
    )
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(item)
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    out = []
    for value in receivers.values:
        if isinstance(value, beam.pvalue.TaggedOutput):
            out.append((value.tag, value.value))
        else:
            out.append((None, value))
    return out


def _has_tag(tag: str | None, pair: tuple[str | None, Any]) -> bool:
    return pair[0] == tag


def _value(pair: tuple[str | None, Any]) -> Any:
    return pair[1]


def _group_key(item: Any) -> Any:
    return item[0]


def _grouped(item: tuple[Any, list[Any]]) -> tuple[Any, list[Any]]:
    key, pairs = item
    return key, [defenestrate(pair[1]) for pair in pairs]


def _global(windowing: Any) -> bool:
    return windowing is None or isinstance(windowing.windowfn, GlobalWindows)


@dataclasses.dataclass
class _Visitor(PipelineVisitor):
    """Beam leaf transforms → Dask bags; ParDo bags hold (tag, value) pairs."""

    bag_kwargs: dict[str, Any]
    bags: dict[AppliedPTransform, Any] = dataclasses.field(default_factory=dict)
    pardos: set[AppliedPTransform] = dataclasses.field(default_factory=set)
    consumed: set[AppliedPTransform] = dataclasses.field(default_factory=set)

    def _bag_of(self, pcoll: Any) -> Any:
        producer = pcoll.producer
        self.consumed.add(producer)
        bag = self.bags[producer]
        if producer in self.pardos:
            bag = bag.filter(functools.partial(_has_tag, pcoll.tag)).map(_value)
        return bag

    def visit_transform(self, node: AppliedPTransform) -> None:
        transform = node.transform
        inputs = [i for i in node.inputs if not isinstance(i, pvalue.PBegin)]
        if isinstance(transform, dask_overrides_module._Create):
            self.bags[node] = Create(node, bag_kwargs=self.bag_kwargs).apply(None)
        elif isinstance(transform, dask_overrides_module._Flatten):
            self.bags[node] = Flatten(node).apply([self._bag_of(i) for i in inputs])
        elif isinstance(transform, dask_overrides_module._GroupByKeyOnly):
            (source,) = inputs
            self.bags[node] = (
                self._bag_of(source).map(defenestrate).groupby(_group_key).map(_grouped)
            )
        elif isinstance(transform, dask_overrides_module._GroupAlsoByWindow):
            # The grouping above is per key only: right for the global window alone.
            if not _global(transform.windowing):
                raise UnsupportedOnDask(f"{node.full_label}: GroupByKey in non-global windows")
            (source,) = inputs
            self.bags[node] = self._bag_of(source)
        elif isinstance(transform, beam.WindowInto):
            if not _global(transform.windowing):
                raise UnsupportedOnDask(f"{node.full_label}: windowing other than global")
            (source,) = inputs
            self.bags[node] = self._bag_of(source)
        elif type(transform) is beam.ParDo:
            self.bags[node] = self._pardo(node, inputs)
            self.pardos.add(node)
        else:
            raise UnsupportedOnDask(
                f"{node.full_label}: {type(transform).__name__} has no translation for Dask"
            )

    def _pardo(self, node: AppliedPTransform, inputs: list[Any]) -> Any:
        transform = typing.cast(beam.ParDo, node.transform)
        if userstate.is_stateful_dofn(transform.fn):
            raise UnsupportedOnDask(f"{node.full_label}: state and timers are not supported")
        main = next(iter(node.main_inputs.values()))
        window_fn = main.windowing.windowfn if hasattr(main, "windowing") else None
        side_inputs = [
            SideInputMap(
                type(si),
                si._view_options(),
                DaskBagWindowedIterator(self._bag_of(si.pvalue), si._window_mapping_fn),
            )
            for si in node.side_inputs
        ]
        args, kwargs = transform.raw_side_inputs
        (source,) = [i for i in inputs if i is main]
        return (
            self._bag_of(source)
            .map(get_windowed_value, window_fn)
            .map_partitions(
                _run_bundle,
                transform.fn,
                transform.label,
                window_fn,
                side_inputs or None,
                list(args),
                kwargs,
            )
        )

    def sinks(self) -> dict[str, Any]:
        """The bags no other transform reads, by full label: what must be computed."""
        return {
            node.full_label: bag.map(_value) if node in self.pardos else bag
            for node, bag in self.bags.items()
            if node not in self.consumed
        }


@dataclasses.dataclass
class BoundedDaskResult(DaskRunnerResult):
    """A running job; `gather` fetches the elements of one sink to the client."""

    sinks: dict[str, Any] = dataclasses.field(default_factory=dict)

    def gather(self, label: str) -> list[Any]:
        """The elements of the sink transform ``label`` (its full label), windows removed."""
        if label not in self.sinks:
            raise KeyError(f"{label!r} is not a sink of the job; sinks: {sorted(self.sinks)}")
        return [defenestrate(item) for item in self.client.gather(self.sinks[label])]


class BoundedDaskRunner(DaskRunner):
    """Beam's DaskRunner with faithful multi-output ParDos and every sink computed."""

    def run_pipeline(self, pipeline, options):
        dask_options = options.view_as(DaskOptions).get_all_options(
            drop_default=True, current_only=True
        )
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        pipeline.replace_all(dask_overrides_module.dask_overrides())
        visitor = _Visitor(bag_kwargs)
        pipeline.visit(visitor)
        sinks = visitor.sinks()
        client = ddist.Client(**dask_options)
        try:
            labels = list(sinks)
            optimized = dask.optimize(*[sinks[label] for label in labels])
            futures = client.compute(list(optimized))
        except BaseException:
            client.close()
            raise
        return BoundedDaskResult(client, futures, dict(zip(labels, futures, strict=True)))


@contextlib.contextmanager
def local_cluster(workers: int, threads: int = 1) -> Iterator[str]:
    """A ``dask.distributed`` LocalCluster of ``workers`` processes; yields its address."""
    # The scheduler runs in this process; its info lines show only when debugging (-v).
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = ddist.LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.WARNING,
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()
