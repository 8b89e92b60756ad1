"""Compile a workbook's VBA with LibreOffice's Basic compiler; run *inside* LibreOffice by test_vba_libreoffice.py.

LibreOffice imports an ``.xlsm``'s VBA modules as Basic modules with ``Option VBASupport 1`` and compiles a
library's modules the first time one of its procedures runs. It has no API that hands back a compile error: its
only reporter is the Basic IDE's error dialog, which a headless office does not show (and opening the IDE headless
aborts the office). So ``soffice --headless`` runs this file as a Python macro of a throwaway profile, in the
office's own process, and it:

1. installs a global Basic error handler (``StarBASIC::SetGlobalErrorHdl``) through ctypes. The compiler calls it
   on each error; it reads what LibreOffice recorded (``StarBASIC::GetActiveModule``, ``GetLine``, ``GetCol1``,
   ``GetCol2``, ``GetErrorText``, exported functions of LibreOffice's Basic library) and answers "go on", so the
   compiler reports every error of a module, not only the first;
2. opens the workbook hidden and read-only, with macros never executed (no ``Workbook_Open``);
3. for each platform of ``PLATFORMS``, gives every module the text that platform compiles (tests/vba_conditional.py:
   LibreOffice ignores ``#If``/``#Const`` lines, so it would compile both branches of each) and runs an empty
   probe function added to the library, which makes LibreOffice compile all the library's modules first;
4. writes a JSON report (the modules as LibreOffice read them, and the errors) and closes the office.

The workbook and the report's paths come from the environment (``LOVBA_WORKBOOK``, ``LOVBA_REPORT``). Only the
standard library and ``uno`` are used: this runs under LibreOffice's Python, not the project's.
"""

from __future__ import annotations

import ctypes
import json
import os
import traceback

try:  # imported by the tests
    from .vba_conditional import PLATFORMS, compile_conditionally
except ImportError:  # run by LibreOffice: the test puts the module in the profile's Scripts/python/pythonpath
    from vba_conditional import PLATFORMS, compile_conditionally  # type: ignore[no-redef]

PROBE_MODULE = "LibreOfficeCompileProbe"
PROBE = "Function Probe()\n    Probe = 42\nEnd Function\n"
NEVER_EXECUTE = 0  # com.sun.star.document.MacroExecMode.NEVER_EXECUTE
MODULE_TYPES = {0: "unknown", 1: "normal", 2: "class", 3: "form", 4: "document"}  # com.sun.star.script.ModuleType
KEEP_ALIVE: list[object] = []  # the installed error handler: LibreOffice holds its address until the office ends


# -- Inside LibreOffice -----------------------------------------------------------------------------------------


class Unsupported(RuntimeError):
    """This LibreOffice does not offer what the error handler needs: the test is skipped, with this reason."""


class Link(ctypes.Structure):
    """LibreOffice's ``Link<StarBASIC*, bool>``: the function, the instance it gets, and (in debug builds only) a
    description, left empty here; a release build reads the first two."""

    _fields_ = (("function", ctypes.c_void_p), ("instance", ctypes.c_void_p), ("summary", ctypes.c_void_p))


HANDLER = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p)


def oustring(address: int | None) -> str:
    """The text of the ``OUString`` at ``address``: one pointer to an rtl_uString (refCount, length, UTF-16)."""
    data = ctypes.c_void_p.from_address(address).value if address else None
    if not data:
        return ""
    length = ctypes.c_int32.from_address(data + 4).value
    return ctypes.string_at(data + 8, 2 * length).decode("utf-16-le", "replace")


def basic_library() -> ctypes.CDLL:
    """The loaded library that holds LibreOffice's Basic: libmergedlo in most builds, libsblo otherwise."""
    for name in ("libmergedlo.so", "libsblo.so", "libmergedlo.dylib", "libsblo.dylib", "mergedlo.dll", "sblo.dll"):
        try:
            library = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(library, "_ZN9StarBASIC17SetGlobalErrorHdlERK4LinkIPS_bE"):
            return library
    raise Unsupported(
        "this LibreOffice's Basic library does not export StarBASIC::SetGlobalErrorHdl under its Itanium C++ name "
        "(Linux and macOS builds do; Windows builds use other names)"
    )


def install_error_handler(errors: list[dict]) -> tuple:
    """Send every Basic error to ``errors``; returns the objects that must stay alive while it is installed."""
    basic = basic_library()

    def function(symbol: str, restype: object, *argtypes: object):
        found = getattr(basic, symbol)
        found.restype, found.argtypes = restype, list(argtypes)
        return found

    line = function("_ZN9StarBASIC7GetLineEv", ctypes.c_uint16)
    column1 = function("_ZN9StarBASIC7GetCol1Ev", ctypes.c_uint16)
    column2 = function("_ZN9StarBASIC7GetCol2Ev", ctypes.c_uint16)
    text = function("_ZN9StarBASIC12GetErrorTextEv", ctypes.c_void_p)
    active_module = function("_ZN9StarBASIC15GetActiveModuleEv", ctypes.c_void_p)
    name_of = function("_ZNK11SbxVariable7GetNameE11SbxNameType", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
    set_handler = function("_ZN9StarBASIC17SetGlobalErrorHdlERK4LinkIPS_bE", None, ctypes.c_void_p)

    def on_error(_instance: int | None, _basic: int | None) -> bool:
        try:
            module = active_module()  # during a compile error, the module being compiled
            errors.append(
                {
                    "module": oustring(name_of(module, 0)) if module else "",
                    "line": line(),
                    "column1": column1(),
                    "column2": column2(),
                    "message": oustring(text()),
                }
            )
        except Exception:  # an exception must not cross into LibreOffice's C++
            errors.append({"module": "", "line": 0, "column1": 0, "column2": 0, "message": traceback.format_exc()})
        return True  # go on: the compiler also reports the module's later errors

    callback = HANDLER(on_error)
    link = Link(ctypes.cast(callback, ctypes.c_void_p).value, None, None)
    set_handler(ctypes.byref(link))
    return callback, link


def named(name: str, value: object) -> object:
    from com.sun.star.beans import PropertyValue  # only inside LibreOffice

    prop = PropertyValue()
    prop.Name, prop.Value = name, value
    return prop


def compile_workbook(path: str) -> dict:
    """Open ``path`` and compile its VBA once per platform: the report that ``main`` writes."""
    import uno  # only inside LibreOffice

    context = uno.getComponentContext()
    manager = context.ServiceManager
    product = manager.createInstanceWithContext(
        "com.sun.star.configuration.ConfigurationProvider", context
    ).createInstanceWithArguments(
        "com.sun.star.configuration.ConfigurationAccess", (named("nodepath", "/org.openoffice.Setup/Product"),)
    )
    report: dict = {
        "libreoffice": f"{product.getByName('ooName')} {product.getByName('ooSetupVersionAboutBox')}",
        "modules": {},
        "errors": [],
        "probe": {},
    }
    errors: list[dict] = []
    KEEP_ALIVE.append(install_error_handler(errors))
    desktop = manager.createInstanceWithContext("com.sun.star.frame.Desktop", context)
    properties = (named("Hidden", True), named("ReadOnly", True), named("MacroExecutionMode", NEVER_EXECUTE))
    document = desktop.loadComponentFromURL(uno.systemPathToFileUrl(os.path.abspath(path)), "_blank", 0, properties)
    try:
        libraries = document.BasicLibraries
        report["vba_mode"] = bool(libraries.VBACompatibilityMode)
        for library_name in libraries.getElementNames():
            libraries.loadLibrary(library_name)
            library = libraries.getByName(library_name)
            names = list(library.getElementNames())
            sources = {name: library.getByName(name) for name in names}
            for name in names:
                kind = library.getModuleInfo(name).ModuleType if library.hasModuleInfo(name) else 0
                report["modules"][name] = {"library": library_name, "type": MODULE_TYPES.get(kind, str(kind)),
                                           "source": sources[name]}  # fmt: skip
            if not names:
                continue
            library.insertByName(PROBE_MODULE, PROBE)
            probe = document.getScriptProvider().getScript(
                f"vnd.sun.star.script:{library_name}.{PROBE_MODULE}.Probe?language=Basic&location=document"
            )
            for platform, constants in PLATFORMS.items():
                for name in names:  # a new source also discards what was compiled from the previous one
                    library.replaceByName(name, compile_conditionally(sources[name], constants))
                del errors[:]
                report["probe"][f"{library_name} {platform}"] = probe.invoke((), (), ())[0]  # 42 when all compile
                report["errors"] += [{"library": library_name, "platform": platform, **error} for error in errors]
    finally:
        document.close(True)
    return report


def main(*_arguments: object) -> None:
    """The macro that ``soffice`` runs: compile, write the report, close the office, whatever happened."""
    import uno  # only inside LibreOffice

    try:
        report = compile_workbook(os.environ["LOVBA_WORKBOOK"])
    except Unsupported as reason:
        report = {"unsupported": str(reason)}
    except Exception:
        report = {"failure": traceback.format_exc()}
    temporary = os.environ["LOVBA_REPORT"] + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
    os.replace(temporary, os.environ["LOVBA_REPORT"])
    context = uno.getComponentContext()
    context.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", context).terminate()


g_exportedScripts = (main,)
