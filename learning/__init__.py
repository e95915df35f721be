"""``framewatch learn``: cameras that appear on the frames topic get their own index, fitted from their stream.

``tracker`` (which cameras, when: pure), ``kafka_io`` (the consumer at the edge),
``service`` (the loop), ``metrics`` (Prometheus). The fit itself is passed in
(``framewatch.learn_fit``), so this package imports neither the command line nor
the worker.
"""
