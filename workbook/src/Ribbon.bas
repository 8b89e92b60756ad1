Attribute VB_Name = "Ribbon"
Option Explicit

' Callbacks of the "Opt-outs" ribbon tab (customUI14.xml: onAction="Ribbon.<Sub>").
' Each runs a function of the ccoptout_xl Python package through xlwings' RunPython.

Sub RefreshOptOuts(control As IRibbonControl)
    RunPython "import ccoptout_xl.excel as x; x.refresh()"
End Sub

Sub SignIn(control As IRibbonControl)
    RunPython "import ccoptout_xl.excel as x; x.sign_in()"
End Sub

Sub SignOut(control As IRibbonControl)
    RunPython "import ccoptout_xl.excel as x; x.sign_out()"
End Sub
