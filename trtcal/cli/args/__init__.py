"""Argument groups that the ``trtcal`` subcommands subscribe to (as Polygraphy's ``tools/args``).

An option that several commands take is defined once, in the group that owns it, so it has the
same name, type, bounds, default and help text wherever it appears. Each group is a class
(:class:`~trtcal.cli.args.base.ArgGroup`) with

* ``title``: the heading its options stand under in ``trtcal COMMAND --help``;
* ``add_parser_args(parser)``: adds its options to a new argument group of ``parser`` with
  that title, and returns that argument group;
* ``parse(args)``: from the parsed namespace, what the library call needs (keyword arguments or
  a small object), after the checks argparse cannot make; it raises
  :class:`~trtcal.core.errors.TrtcalError` for a bad value.

The constructor's arguments choose the options a command takes from the group and the help
words that really differ by command (for example what ``--data`` is for). A command module
makes its instances at module level, passes them to :func:`trtcal.cli.common.add_command` in its
``register`` and calls their ``parse`` in its ``cmd_*`` function.

Modules, one group each (plus the argparse number types):

* :mod:`.numbers`: bounded int and float argparse types (counts, fractions, bit widths ...);
* :mod:`.algorithm`: the threshold algorithm and its options (``--algorithm``, ``--bits`` ...);
* :mod:`.stats`: the statistics file read (``--stats``);
* :mod:`.ranges`: where the ranges of a Q/DQ model come from (``--cache`` or ``--stats``);
* :mod:`.qdq`: how the Q/DQ model is written (``--target``, ``--weights`` ...);
* :mod:`.data`: the data the model runs on and how it is fed (``--data``, ``--batch-size`` ...);
* :mod:`.scoring`: which model outputs are scored (``--score``, ``--classifier``);
* :mod:`.plot`: pictures that need matplotlib (``--plot``, ``--no-plots``);
* :mod:`.output`: what is written and printed (``-o``, ``--force``, ``--json``, ``--quiet``).

Heavy packages (onnxruntime, matplotlib, tensorrt) are imported inside ``parse`` only, so that
``trtcal --help`` stays fast.
"""
