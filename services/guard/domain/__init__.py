"""Guard's pure logic: no I/O, no clock reads (time is passed in).

``trigger_model`` (kinds, sources, the state machine, reasons, ``TriggerSpec``) and ``trigger_rows`` (a
``triggers`` row, its spec and its protos) are the vocabulary; ``trigger_index`` is the engine every tick
runs through (``source_book`` and ``trailing`` are its price structures); ``tick_view`` reads a tick;
``sell_sizing`` and ``sell_orders`` size and build a fired trigger's SELL and read its order events;
``fire_records`` is what a fire reads, decides and records; ``exit_plans`` turns a subscription's exits
into triggers; ``perf_rules`` turns fills and marks into PnL and loss-stop / profit-scale decisions.
"""
