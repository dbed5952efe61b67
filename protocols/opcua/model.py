"""The park's address space: ``Objects / Park / Meters / <meter id>`` and the values in it.

Theory of operation
-------------------
**Shape.** ``Park`` (an object in ``urn:wattkeeper``) holds the park totals
(``protocols.opcua.values.PARK_VARIABLES``) and two folders: ``Meters``, whose children are
the meters by id (the contract's browse path), and ``Gateways``, one object per gateway with
its status, which also *organizes* its meters, so a SCADA engineer can browse by bus. Every
meter is an instance of ``MeterType`` (an ObjectType, so HMIs can template it): the variables
of ``METER_VARIABLES`` and the methods ``TopUp``, ``OpenRelay``, ``AutoRelay``,
``ResetLockout`` and ``AckAlarm``. Node ids are readable strings whose part up to the first
``:`` says what the node is and the rest is the id verbatim (ids may hold any printable
character): ``meter:M-0001``, ``meter.Balance:M-0001``, ``gateway.Online:gw1``.

**Bulk path.** asyncua's node-by-node API costs ~1.2 ms a node and re-scans the parent's
references on every child it adds (quadratic for a folder of 10,000 meters), and one
``add_nodes`` batch is no better. So the few fixed nodes (park, folders, ``MeterType``,
gateways) are made with the normal API, and the meters are written straight into asyncua's
address space (``NodeData`` records, what ``add_nodes`` would have produced) from
``MeterType``'s own nodes: every attribute that is the same for all meters' ``Balance``
(browse name, data type, access level...) is one shared object, and the methods and the
``EngineeringUnits`` properties are the type's nodes, referenced by each instance (a method
called on a meter gets the meter as its object: ``protocols.opcua.methods``). What is the
meter's own is its node id, its name and, per variable, its value.

**Values.** A meter variable stores no value: it reads through a callback from the mirror of
the park (the latest view of every meter), so a meter whose view changes costs nothing here
unless a client monitors one of its variables; then a ``DataValue`` is made for each variable
whose value changed and handed to the monitored items (latest value wins: the stream
coalesces, asyncua's queues do the rest). Source timestamps are the reading's wall label.
Park and gateway values are few and change at most four times a second: they are written
through asyncua's normal path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from asyncua import Node, Server, ua
from asyncua.server.address_space import AddressSpace, AttributeValue, NodeData

from protocols.opcua.values import (
    GATEWAY_VARIABLES,
    METER_VARIABLES,
    PARK_VARIABLES,
    Unit,
    Variable,
    currency_unit,
)
from protocols.stream.views import GatewayView, MeterView, ParkState, StreamTick

NAMESPACE_URI: Final = "urn:wattkeeper"
METER_PREFIX: Final = "meter:"
GATEWAY_PREFIX: Final = "gateway:"


def meter_variable_id(name: str, meter_id: str) -> str:
    return f"meter.{name}:{meter_id}"


def gateway_variable_id(name: str, gateway_id: str) -> str:
    return f"gateway.{name}:{gateway_id}"
METHOD_NAMES: Final = ("TopUp", "OpenRelay", "AutoRelay", "ResetLockout", "AckAlarm")

_VARIANT: Final = {"Double": ua.VariantType.Double, "Boolean": ua.VariantType.Boolean,
                   "String": ua.VariantType.String, "UInt32": ua.VariantType.UInt32}
_DEFAULT: Final = {"Double": 0.0, "Boolean": False, "String": "", "UInt32": 0}
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
HAS_COMPONENT: Final = ua.NodeId(ua.ObjectIds.HasComponent)
HAS_PROPERTY: Final = ua.NodeId(ua.ObjectIds.HasProperty)
HAS_TYPE_DEFINITION: Final = ua.NodeId(ua.ObjectIds.HasTypeDefinition)
ORGANIZES: Final = ua.NodeId(ua.ObjectIds.Organizes)
HAS_NOTIFIER: Final = ua.NodeId(ua.ObjectIds.HasNotifier)

MethodHandler = Callable[..., Any]
"""``handler(object_id, *variants)``: asyncua's method callback."""


def wall_time(ts_ms: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=ts_ms)


def meter_id_of(node_id: ua.NodeId) -> str | None:
    """The meter of a meter object's node id (None for any other node)."""
    identifier = node_id.Identifier
    if isinstance(identifier, str) and identifier.startswith(METER_PREFIX):
        return identifier[len(METER_PREFIX):]
    return None


def _ref(reftype: ua.NodeId, forward: bool, target: ua.NodeId, bname: ua.QualifiedName,
         nodeclass: ua.NodeClass, typedef: ua.NodeId | None = None) -> ua.ReferenceDescription:
    ref = ua.ReferenceDescription()
    ref.ReferenceTypeId = reftype
    ref.IsForward = forward
    ref.NodeId = target
    ref.BrowseName = bname
    ref.DisplayName = ua.LocalizedText(bname.Name)
    ref.NodeClass = nodeclass
    if typedef is not None:
        ref.TypeDefinition = typedef
    return ref


def _attribute(value: Any, vtype: ua.VariantType) -> AttributeValue:
    return AttributeValue(ua.DataValue(ua.Variant(value, vtype)))


class ParkModel:
    """The address space of one park in one asyncua server (module docstring)."""

    def __init__(self, server: Server, state: ParkState, *, decimals: int, currency: str,
                 handlers: Mapping[str, MethodHandler]) -> None:
        self._server = server
        self._aspace: AddressSpace = server.iserver.aspace
        self._state = state
        self.scale = 10 ** decimals
        self._currency = currency_unit(currency)
        self._handlers = handlers
        self.ns = 0
        self._values: dict[str, tuple[AttributeValue, ...]] = {}
        self._last: dict[str, MeterView] = {}
        self._park_nodes: list[Node] = []
        self._gateway_nodes: dict[str, list[Node]] = {}
        self._gateway_objects: dict[str, ua.NodeId] = {}
        self.updates = 0
        """Meter variable values that changed (whether or not anyone watches them)."""
        self.notified = 0
        """... of which a client monitors (a data-change notification each)."""

    # -- building -------------------------------------------------------------------------------

    async def build(self) -> None:
        server = self._server
        self.ns = ns = await server.register_namespace(NAMESPACE_URI)
        meter_type = await self._build_meter_type(ns)
        park = await server.nodes.objects.add_object(
            ua.NodeId("Park", ns), ua.QualifiedName("Park", ns))
        await park.write_attribute(ua.AttributeIds.EventNotifier, ua.DataValue(
            ua.Variant(1, ua.VariantType.Byte)))
        self._park_nodes = [await self._add_variable(park, f"Park.{v.name}", v, ns)
                            for v in PARK_VARIABLES]
        await park.add_folder(ua.NodeId("Park/Meters", ns), ua.QualifiedName("Meters", ns))
        gateways = await park.add_folder(ua.NodeId("Park/Gateways", ns),
                                         ua.QualifiedName("Gateways", ns))
        for view in self._state.gateway_views():
            await self._add_gateway(gateways, view, ns)
        self._add_meters(meter_type, self._state.current().values(), ns)
        await self.write_park()
        # Events from the meters reach a client subscribed at the Server object.
        await server.nodes.server.add_reference(park, HAS_NOTIFIER, forward=True)

    async def _build_meter_type(self, ns: int) -> _MeterType:
        base = self._server.nodes.base_object_type
        node = await base.add_object_type(ua.NodeId("MeterType", ns),
                                          ua.QualifiedName("MeterType", ns))
        variables = []
        for variable in METER_VARIABLES:
            child = await self._add_variable(node, f"MeterType.{variable.name}", variable, ns)
            await child.set_modelling_rule(True)
            variables.append(self._aspace[child.nodeid])
        methods = []
        for name in METHOD_NAMES:
            inputs, outputs = METHOD_ARGUMENTS[name]
            method = await node.add_method(ua.NodeId(f"MeterType.{name}", ns),
                                           ua.QualifiedName(name, ns), self._handlers[name],
                                           list(inputs), list(outputs))
            await method.set_modelling_rule(True)
            methods.append(self._aspace[method.nodeid])
        return _MeterType(self._aspace[node.nodeid], tuple(variables), tuple(methods))

    async def _add_variable(self, parent: Node, node_id: str, variable: Variable,
                            ns: int) -> Node:
        vtype = _VARIANT[variable.kind]
        node = await parent.add_variable(ua.NodeId(node_id, ns),
                                         ua.QualifiedName(variable.name, ns),
                                         _DEFAULT[variable.kind], vtype)
        if variable.description:
            await node.write_attribute(ua.AttributeIds.Description, ua.DataValue(
                ua.Variant(ua.LocalizedText(variable.description), ua.VariantType.LocalizedText)))
        unit = self._currency if variable.money else variable.unit
        if unit is not None:
            await node.add_property(ua.NodeId(f"{node_id}.EngineeringUnits", ns),
                                    ua.QualifiedName("EngineeringUnits", 0), _eu(unit),
                                    ua.VariantType.ExtensionObject,
                                    ua.NodeId(ua.ObjectIds.EUInformation))
        if variable.historized:
            level = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask
            for attribute in (ua.AttributeIds.AccessLevel, ua.AttributeIds.UserAccessLevel):
                await node.write_attribute(attribute, ua.DataValue(
                    ua.Variant(level, ua.VariantType.Byte)))
            await node.write_attribute(ua.AttributeIds.Historizing, ua.DataValue(
                ua.Variant(True, ua.VariantType.Boolean)))
        return node

    async def _add_gateway(self, folder: Node, view: GatewayView, ns: int) -> None:
        gid = view.gateway_id
        node = await folder.add_object(ua.NodeId(f"{GATEWAY_PREFIX}{gid}", ns),
                                       ua.QualifiedName(gid, ns))
        self._gateway_objects[gid] = node.nodeid
        self._gateway_nodes[gid] = [
            await self._add_variable(node, gateway_variable_id(v.name, gid), v, ns)
            for v in GATEWAY_VARIABLES]
        await self._write_values(self._gateway_nodes[gid], GATEWAY_VARIABLES, view, view.ts_ms)

    def _add_meters(self, meter_type: _MeterType, views: Iterable[MeterView], ns: int) -> None:
        """The bulk path (module docstring)."""
        aspace = self._aspace
        folder_id = ua.NodeId("Park/Meters", ns)
        folder = aspace[folder_id]
        folder_name = ua.QualifiedName("Meters", ns)
        type_id = meter_type.node.nodeid
        nodeclass_object = _attribute(ua.NodeClass.Object, ua.VariantType.Int32)
        shared_object = {  # attributes every meter object has alike
            ua.AttributeIds.NodeClass: nodeclass_object,
            ua.AttributeIds.Description: _attribute(ua.LocalizedText("a prepaid meter"),
                                                    ua.VariantType.LocalizedText),
            ua.AttributeIds.WriteMask: _attribute(0, ua.VariantType.UInt32),
            ua.AttributeIds.UserWriteMask: _attribute(0, ua.VariantType.UInt32),
            ua.AttributeIds.EventNotifier: _attribute(1, ua.VariantType.Byte),
        }
        to_folder = _ref(ORGANIZES, False, folder_id, folder_name, ua.NodeClass.Object)
        to_type = _ref(HAS_TYPE_DEFINITION, True, type_id, meter_type.bname,
                       ua.NodeClass.ObjectType)
        to_methods = [_ref(HAS_COMPONENT, True, m.nodeid, _bname(m), ua.NodeClass.Method)
                      for m in meter_type.methods]
        templates = [_VariableTemplate(v) for v in meter_type.variables]
        readers = [self._meter_reader(v) for v in METER_VARIABLES]
        names = [v.name for v in METER_VARIABLES]
        gateways = {gid: aspace[node_id] for gid, node_id in self._gateway_objects.items()}
        for view in views:
            meter_id = view.meter_id
            object_id = ua.NodeId(f"{METER_PREFIX}{meter_id}", ns)
            bname = ua.QualifiedName(meter_id, ns)
            meter = NodeData(object_id)
            meter.attributes = dict(shared_object)
            meter.attributes[ua.AttributeIds.NodeId] = _attribute(object_id,
                                                                  ua.VariantType.NodeId)
            meter.attributes[ua.AttributeIds.BrowseName] = _attribute(
                bname, ua.VariantType.QualifiedName)
            meter.attributes[ua.AttributeIds.DisplayName] = _attribute(
                ua.LocalizedText(meter_id), ua.VariantType.LocalizedText)
            to_meter = _ref(HAS_COMPONENT, False, object_id, bname, ua.NodeClass.Object,
                            type_id)
            references = [to_folder, to_type, *to_methods]
            values = []
            for template, reader, name in zip(templates, readers, names, strict=True):
                node_id = ua.NodeId(meter_variable_id(name, meter_id), ns)
                value, data = template.instance(node_id, to_meter, reader)
                aspace[node_id] = data
                values.append(value)
                references.append(_ref(HAS_COMPONENT, True, node_id, template.bname,
                                       ua.NodeClass.Variable, template.typedef))
            gateway = gateways.get(view.gateway)
            if gateway is not None:
                gateway_id = gateway.nodeid
                references.append(_ref(ORGANIZES, False, gateway_id,
                                       ua.QualifiedName(view.gateway, ns), ua.NodeClass.Object))
                gateway.references.append(_ref(ORGANIZES, True, object_id, bname,
                                               ua.NodeClass.Object, type_id))
            meter.references = references
            aspace[object_id] = meter
            folder.references.append(_ref(ORGANIZES, True, object_id, bname,
                                          ua.NodeClass.Object, type_id))
            self._values[meter_id] = tuple(values)
            self._last[meter_id] = view

    def _meter_reader(self, variable: Variable) -> Callable[[ua.NodeId, Any], ua.DataValue]:
        """The value callback of every meter's ``variable`` (one for all meters)."""
        current = self._state.current
        read = variable.read
        vtype = _VARIANT[variable.kind]
        scale = self.scale

        def read_value(node_id: ua.NodeId, _attribute: Any) -> ua.DataValue:
            meter_id = str(node_id.Identifier).partition(":")[2]
            view = current().get(meter_id)
            if view is None:
                return ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown))
            return _data_value(read(view, scale), vtype, view.ts_ms)

        return read_value

    # -- following the park -------------------------------------------------------------------

    async def apply(self, tick: StreamTick) -> None:
        """Hand what changed to the clients that monitor it (the mirror already has it)."""
        if tick.meters:
            await self._notify_meters(tick.meters)
        if tick.park is not None:
            await self.write_park()
        for gateway in tick.gateways:
            nodes = self._gateway_nodes.get(gateway.gateway_id)
            if nodes is not None:
                await self._write_values(nodes, GATEWAY_VARIABLES, gateway, gateway.ts_ms)

    async def _notify_meters(self, views: Sequence[MeterView]) -> None:
        last = self._last
        scale = self.scale
        kinds = _METER_KINDS
        for view in views:
            meter_id = view.meter_id
            before = last.get(meter_id)
            values = self._values.get(meter_id)
            if before is None or values is None:
                continue  # not in the address space (a meter the config does not have)
            last[meter_id] = view
            for (variable, vtype), value in zip(kinds, values, strict=True):
                new = variable.read(view, scale)
                if new == variable.read(before, scale):
                    continue
                self.updates += 1
                callbacks = value.datachange_callbacks
                if callbacks:
                    data = _data_value(new, vtype, view.ts_ms)
                    self.notified += 1
                    for handle, callback in list(callbacks.items()):
                        await callback(handle, data)

    async def write_park(self) -> None:
        park = self._state.park_view()
        await self._write_values(self._park_nodes, PARK_VARIABLES, park, park.ts_ms)

    async def _write_values(self, nodes: Sequence[Node], variables: Sequence[Variable], view: Any,
                      ts_ms: int) -> None:
        aspace = self._aspace
        for node, variable in zip(nodes, variables, strict=True):
            value = variable.read(view, self.scale)
            attribute = aspace[node.nodeid].attributes[ua.AttributeIds.Value]
            if attribute.value is not None and attribute.value.Value is not None \
                    and attribute.value.Value.Value == value:
                continue
            data = _data_value(value, _VARIANT[variable.kind], ts_ms)
            attribute.value = data
            for handle, callback in list(attribute.datachange_callbacks.items()):
                await callback(handle, data)


_METER_KINDS: Final = tuple((v, _VARIANT[v.kind]) for v in METER_VARIABLES)


def _data_value(value: Any, vtype: ua.VariantType, ts_ms: int) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=wall_time(ts_ms),
                        ServerTimestamp=dt.datetime.now(dt.UTC))


def _eu(unit: Unit) -> ua.EUInformation:
    info = ua.EUInformation()
    info.NamespaceUri = "http://www.opcfoundation.org/UA/units/un/cefact"
    info.UnitId = unit.unit_id
    info.DisplayName = ua.LocalizedText(unit.display)
    info.Description = ua.LocalizedText(unit.description)
    return info


def _bname(data: NodeData) -> ua.QualifiedName:
    value = data.attributes[ua.AttributeIds.BrowseName].value
    assert value is not None and value.Value is not None
    name: ua.QualifiedName = value.Value.Value
    return name


class _MeterType:
    def __init__(self, node: NodeData, variables: tuple[NodeData, ...],
                 methods: tuple[NodeData, ...]) -> None:
        self.node = node
        self.bname = _bname(node)
        self.variables = variables
        self.methods = methods


class _VariableTemplate:
    """What every meter's variable of one kind shares, taken from ``MeterType``'s."""

    def __init__(self, data: NodeData) -> None:
        self.bname = _bname(data)
        self.attributes = {key: value for key, value in data.attributes.items()
                           if key not in (ua.AttributeIds.NodeId, ua.AttributeIds.Value)}
        self.typedef = ua.NodeId(ua.ObjectIds.BaseDataVariableType)
        self.shared_refs: list[ua.ReferenceDescription] = []
        for ref in data.references:
            if ref.ReferenceTypeId == HAS_TYPE_DEFINITION:
                self.typedef = ref.NodeId
                self.shared_refs.append(ref)
            elif ref.ReferenceTypeId == HAS_PROPERTY:
                self.shared_refs.append(ref)  # EngineeringUnits: the type's, one for all

    def instance(self, node_id: ua.NodeId, to_parent: ua.ReferenceDescription,
                 reader: Callable[[ua.NodeId, Any], ua.DataValue]
                 ) -> tuple[AttributeValue, NodeData]:
        data = NodeData(node_id)
        attributes = dict(self.attributes)
        attributes[ua.AttributeIds.NodeId] = _attribute(node_id, ua.VariantType.NodeId)
        value = AttributeValue(None)  # (read through the callback)
        value.value_callback = reader
        attributes[ua.AttributeIds.Value] = value
        data.attributes = attributes
        data.references = [to_parent, *self.shared_refs]
        return value, data


def _argument(name: str, vtype: ua.VariantType, description: str) -> ua.Argument:
    argument = ua.Argument()
    argument.Name = name
    argument.DataType = ua.NodeId(vtype.value)
    argument.ValueRank = -1
    argument.ArrayDimensions = []
    argument.Description = ua.LocalizedText(description)
    return argument


METHOD_ARGUMENTS: Final[dict[str, tuple[tuple[ua.Argument, ...], tuple[ua.Argument, ...]]]] = {
    "TopUp": (
        (_argument("amount", ua.VariantType.Double, "currency units, at most the currency's "
                   "decimals (e.g. 100.00)"),
         _argument("reference", ua.VariantType.String, "your unique reference for this "
                   "payment: calling again with it credits nothing more")),
        (_argument("balance", ua.VariantType.Double, "the balance after the top-up"),)),
    "OpenRelay": (
        (_argument("reason", ua.VariantType.String, "why the supply is cut (audited)"),), ()),
    "AutoRelay": ((), ()),
    "ResetLockout": ((), ()),
    "AckAlarm": (
        (_argument("alarmId", ua.VariantType.String, "the alarm's id, as in its event's "
                   "ConditionName or the console"),), ()),
}
