# Crash-safety harness: runs a mutating operation in a child pwsh, kills it with SIGKILL at a seeded random
# moment within the operation's measured duration, then checks what is left on disk and that the same command
# runs again. The operations are the table in CrashOperations.ps1.

$script:TempPrefix = '.kvmstorage-tmp-'

function Get-PwshCommand {
    # The tests run under 'dotnet pwsh' (pwsh.dll) or a pwsh binary: start the child the same way.
    $exe = [Environment]::ProcessPath
    $first = [Environment]::GetCommandLineArgs()[0]
    if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'dotnet' -and $first -like '*.dll') { return $exe, @($first) }
    return $exe, @()
}

function Start-CrashChild {
    param([string] $Root, [string] $Command, [string] $Module, [string] $ScriptFolder)
    $script = Join-Path $ScriptFolder ("child-" + [guid]::NewGuid().ToString('N') + '.ps1')
    @"
`$ErrorActionPreference = 'Stop'
Import-Module '$($Module -replace "'", "''")'
[Console]::Out.WriteLine('READY'); [Console]::Out.Flush()
$Command
[Console]::Out.WriteLine('DONE'); [Console]::Out.Flush()
"@ | Set-Content -LiteralPath $script
    $exe, $prefix = Get-PwshCommand
    $psi = [Diagnostics.ProcessStartInfo]::new($exe)
    foreach ($a in @($prefix) + @('-NoProfile', '-NonInteractive', '-File', $script)) { $psi.ArgumentList.Add($a) }
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $true
    $psi.UseShellExecute = $false
    $psi.Environment['KVMSTORAGE_ROOT'] = $Root
    $p = [Diagnostics.Process]::Start($psi)
    $lines = [Collections.Concurrent.ConcurrentQueue[string]]::new()
    $errLines = [Collections.Concurrent.ConcurrentQueue[string]]::new()
    $null = Register-ObjectEvent -InputObject $p -EventName OutputDataReceived -MessageData $lines -Action { if ($null -ne $EventArgs.Data) { $Event.MessageData.Enqueue($EventArgs.Data) } }
    $null = Register-ObjectEvent -InputObject $p -EventName ErrorDataReceived -MessageData $errLines -Action { if ($null -ne $EventArgs.Data) { $Event.MessageData.Enqueue($EventArgs.Data) } }
    $p.BeginOutputReadLine(); $p.BeginErrorReadLine()
    [pscustomobject]@{ Process = $p; Lines = $lines; Errors = $errLines; Script = $script }
}

function Wait-ChildLine {
    param($Child, [string] $Line, [int] $TimeoutSeconds)
    $sw = [Diagnostics.Stopwatch]::StartNew()
    while ($sw.Elapsed.TotalSeconds -lt $TimeoutSeconds) {
        if ($Child.Lines.ToArray() -contains $Line) { return $true }
        if ($Child.Process.HasExited) { Start-Sleep -Milliseconds 100; return ($Child.Lines.ToArray() -contains $Line) }
        Start-Sleep -Milliseconds 10
    }
    $false
}

function Stop-CrashChild($Child) {
    if (-not $Child.Process.HasExited) { $Child.Process.Kill() }   # SIGKILL on Linux
    $Child.Process.WaitForExit()
    Get-EventSubscriber | Where-Object { $_.SourceObject -eq $Child.Process } | Unregister-Event
    Remove-Item -LiteralPath $Child.Script -ErrorAction SilentlyContinue
}

function Test-HostConsistency {
    <# Every problem on a host root after a crash, as strings: images, definitions, temporaries, listings. #>
    param([string] $Root, [bool] $AllowLeaks, [switch] $NoTempAllowed)
    $problems = [Collections.Generic.List[string]]::new()
    $validator = [bool](Get-Command virt-xml-validate -ErrorAction SilentlyContinue)
    $qemuImg = [bool](Get-Command qemu-img -ErrorAction SilentlyContinue)
    foreach ($kind in @(@{ Dir = 'etc/libvirt/storage'; Schema = 'storagepool' }, @{ Dir = 'etc/libvirt/qemu'; Schema = 'domain' })) {
        $dir = Join-Path $Root $kind.Dir
        if (-not (Test-Path $dir)) { continue }
        foreach ($f in Get-ChildItem -LiteralPath $dir -Filter *.xml -File) {
            try { $null = [xml](Get-Content -Raw -LiteralPath $f.FullName) } catch { $problems.Add("$($f.Name) does not parse: $_"); continue }
            if ($validator) {
                $out = & virt-xml-validate $f.FullName $kind.Schema 2>&1
                if ($LASTEXITCODE -ne 0) { $problems.Add("$($f.Name) fails virt-xml-validate: $out") }
            }
        }
        if ($NoTempAllowed) {
            foreach ($t in Get-ChildItem -LiteralPath $dir -Force -File | Where-Object Name -like "$TempPrefix*") {
                if ($t.LastWriteTimeUtc -lt [datetime]::UtcNow.AddMinutes(-10)) { $problems.Add("stale temporary $($t.Name) in $($kind.Dir)") }
            }
        }
    }
    $pools = @(Get-StoragePool -ErrorVariable poolErrors -ErrorAction SilentlyContinue)
    foreach ($e in $poolErrors) { $problems.Add("Get-StoragePool: $e") }
    foreach ($vm in Get-ChildItem -LiteralPath (Join-Path $Root 'etc/libvirt/qemu') -Filter *.xml -File -ErrorAction SilentlyContinue) {
        $null = Get-VMDisk -VMName $vm.BaseName -ErrorVariable diskErrors -ErrorAction SilentlyContinue
        foreach ($e in $diskErrors) { $problems.Add("Get-VMDisk $($vm.BaseName): $e") }
    }
    foreach ($pool in $pools) {
        if (-not $pool.LocalPath -or -not (Test-Path -LiteralPath $pool.LocalPath)) { continue }
        $null = Get-Volume -Pool $pool.Name -ErrorVariable volErrors -ErrorAction SilentlyContinue
        foreach ($e in $volErrors) { $problems.Add("Get-Volume -Pool $($pool.Name): $e") }
        foreach ($f in Get-ChildItem -LiteralPath $pool.LocalPath -Force -File) {
            if ($f.Name.StartsWith($TempPrefix)) {
                if ($NoTempAllowed) { $problems.Add("temporary $($f.Name) was not recovered") }
                continue
            }
            if ($qemuImg) {
                $fmt = (& qemu-img info -U --output=json $f.FullName 2>$null | ConvertFrom-Json).format
                if ($fmt -eq 'qcow2') {
                    $out = & qemu-img check --output=json $f.FullName 2>&1
                    $code = $LASTEXITCODE
                    if ($code -ne 0 -and -not ($code -eq 3 -and $AllowLeaks)) { $problems.Add("qemu-img check $($f.Name) exit $code`: $out") }
                }
            }
        }
    }
    $problems
}

function Invoke-CrashTrial {
    <#
    .SYNOPSIS
        Runs each operation class Trials times under SIGKILL and returns one result per trial.
    .PARAMETER Operation
        Class names from CrashOperations.ps1; all by default.
    #>
    param(
        [Parameter(Mandatory)] [string] $Module,
        [Parameter(Mandatory)] [string] $WorkFolder,
        [int] $Trials = 5,
        [int] $Seed = 20261125,
        [string[]] $Operation
    )
    $table = & (Join-Path $PSScriptRoot 'CrashOperations.ps1')
    if ($Operation) { $table = @($table | Where-Object { $_.Name -in $Operation }) }
    $random = [Random]::new($Seed)
    $savedRoot = $env:KVMSTORAGE_ROOT
    try {
        foreach ($op in $table) {
            # Calibration: one uninterrupted run gives the operation's typical duration on this machine.
            $root = New-CrashRoot $WorkFolder $op
            $child = Start-CrashChild -Root $root -Command $op.Command -Module $Module -ScriptFolder $WorkFolder
            $null = Wait-ChildLine $child 'READY' 300
            $sw = [Diagnostics.Stopwatch]::StartNew()
            $finished = Wait-ChildLine $child 'DONE' 600
            $duration = $sw.Elapsed.TotalMilliseconds
            $errors = @($child.Errors.ToArray())
            Stop-CrashChild $child
            $calibration = @(Test-HostConsistency -Root $root -AllowLeaks ([bool]$op.AllowLeaks)) + @(& $op.Check $root)
            if (-not $finished) { $calibration += "the uninterrupted run did not finish: $($errors -join ' ')" }
            [pscustomobject]@{ Operation = $op.Name; Trial = 0; DelayMs = -1; DurationMs = [int]$duration; Completed = $finished; Problems = @($calibration | Where-Object { $_ }) }
            Remove-Item -Recurse -Force $root

            for ($t = 1; $t -le $Trials; $t++) {
                $delay = [int]($random.NextDouble() * $duration * 1.1)
                $root = New-CrashRoot $WorkFolder $op
                $child = Start-CrashChild -Root $root -Command $op.Command -Module $Module -ScriptFolder $WorkFolder
                $problems = [Collections.Generic.List[string]]::new()
                if (-not (Wait-ChildLine $child 'READY' 300)) { $problems.Add('the child never got ready: ' + ($child.Errors.ToArray() -join ' ')) }
                Start-Sleep -Milliseconds $delay
                $completed = $child.Lines.ToArray() -contains 'DONE'
                Stop-CrashChild $child
                $env:KVMSTORAGE_ROOT = $root
                foreach ($p in @(Test-HostConsistency -Root $root -AllowLeaks ([bool]$op.AllowLeaks)) + @(& $op.Check $root)) { if ($p) { $problems.Add("after the kill: $p") } }

                # The next run of the same command succeeds (or reports that the killed run had finished).
                try {
                    $null = & ([scriptblock]::Create($op.Command)) -ErrorAction Stop 2>&1 | Where-Object { $_ -is [Management.Automation.ErrorRecord] } | ForEach-Object { throw $_ }
                }
                catch {
                    $id = "$($_.FullyQualifiedErrorId)".Split(',')[0]
                    if ($id -notin @($op.DoneErrorIds)) { $problems.Add("the re-run failed: [$($_.FullyQualifiedErrorId)] $_") }
                }
                foreach ($p in @(Test-HostConsistency -Root $root -AllowLeaks ([bool]$op.AllowLeaks) -NoTempAllowed) + @(& $op.Check $root)) { if ($p) { $problems.Add("after the re-run: $p") } }
                [pscustomobject]@{ Operation = $op.Name; Trial = $t; DelayMs = $delay; DurationMs = [int]$duration; Completed = $completed; Problems = @($problems) }
                Remove-Item -Recurse -Force $root
            }
        }
    }
    finally { $env:KVMSTORAGE_ROOT = $savedRoot }
}

function New-CrashRoot([string] $WorkFolder, $Op) {
    $root = Join-Path $WorkFolder ("$($Op.Name)-" + [guid]::NewGuid().ToString('N').Substring(0, 8))
    New-Item -ItemType Directory -Path $root | Out-Null
    $env:KVMSTORAGE_ROOT = $root
    & $Op.Setup $root
    $root
}

Export-ModuleMember -Function Invoke-CrashTrial, Test-HostConsistency
