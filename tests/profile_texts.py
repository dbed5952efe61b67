"""Profile files as an operator would write them, shared by the tests that load them."""

from __future__ import annotations

# The ACME PM100 of docs/profiles.md (holding registers, 32-bit integers low word first,
# fixed-point scales, one value on function 4), except that this one reports its relay as a
# discrete input, so the tests cover that option too.
ACME_PM100 = """\
name = "acme-pm100"
kind = "electricity"
description = "ACME PM100 single-phase meter (documentation example)"

[read_plan]
max_gap = 20
max_registers = 60

[relay]
function_read = 2       # this one reports its relay contact as a discrete input
function_write = 5

[values.voltage]
function = 3
address = 0x0000
type = "uint16"
scale = 0.1
unit = "V"

[values.current]
function = 3
address = 0x0001
type = "uint32"
word_order = "little"
scale = 0.001
unit = "A"

[values.total_power]
function = 3
address = 0x0010
type = "int32"
word_order = "little"
scale = 0.1
unit = "W"

[values.import_energy]
function = 3
address = 0x0100
type = "uint32"
word_order = "little"
scale = 0.01
unit = "kWh"

[values.frequency]
function = 4
address = 0x0000
type = "uint16"
scale = 0.01
unit = "Hz"
"""
