#Requires -Version 7.4
<#
.SYNOPSIS
    Runs documented commands one after another in this process, as a user pasting them would, and records
    for each its output and every error it wrote or threw. Examples.Tests.ps1 starts it in a fresh pwsh per
    document with KVMSTORAGE_ROOT set to a sandbox root.
.DESCRIPTION
    -StepFile is JSON: an array of { Id, Code, Skip }. A step with Skip set is recorded and not run. Steps run
    in this script's scope (dot-sourced), so a variable one step sets is seen by the next, as in a console.
    Errors silenced by the command itself (-ErrorAction SilentlyContinue) are not counted: the user sees
    none either. The result, an array of { Id, Ran, Errors, Output }, is written to -ResultFile as JSON.
#>
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [Parameter(Mandatory)] [string] $StepFile,
    [Parameter(Mandatory)] [string] $ResultFile,
    # Each step on its own, as a separate paste: the host root and the current folder are restored before it.
    [switch] $Isolated
)
Import-Module $ModulePath

# Examples ask for passphrases as a user would (Read-Host -AsSecureString); this pwsh runs -NonInteractive, so the
# prompt is answered here with the passphrase the sandbox's encrypted images have (Examples.Tests.ps1).
function Read-Host {
    param([Parameter(Position = 0)] [object] $Prompt, [switch] $AsSecureString, [switch] $MaskInput)
    if (-not $AsSecureString) { throw 'ExampleRunner answers only passphrase prompts (Read-Host -AsSecureString).' }
    ConvertTo-SecureString $env:KVMSTORAGE_EXAMPLE_PASSPHRASE -AsPlainText -Force
}

$__kvmRoot = $env:KVMSTORAGE_ROOT
$__kvmLocation = (Get-Location).Path
$__kvmSteps = @(Get-Content -Raw -LiteralPath $StepFile | ConvertFrom-Json)
$__kvmResults = [Collections.Generic.List[object]]::new()
foreach ($__kvmStep in $__kvmSteps) {
    if ($__kvmStep.Skip) {
        $__kvmResults.Add([pscustomobject]@{ Id = $__kvmStep.Id; Ran = $false; Errors = @(); Output = '' })
        continue
    }
    if ($Isolated) { $env:KVMSTORAGE_ROOT = $__kvmRoot; Set-Location -LiteralPath $__kvmLocation }
    $__kvmErrors = [Collections.Generic.List[string]]::new()
    $__kvmOutput = [Collections.Generic.List[object]]::new()
    try {
        . ([scriptblock]::Create($__kvmStep.Code)) 2>&1 | ForEach-Object {
            if ($_ -is [Management.Automation.ErrorRecord]) { $__kvmErrors.Add("$($_.FullyQualifiedErrorId): $_") }
            else { $__kvmOutput.Add($_) }
        }
    }
    catch {
        $__kvmErrors.Add("terminating $($_.FullyQualifiedErrorId): $_")
    }
    # Formatting is part of what the user sees: a broken view is an error too.
    $__kvmText = try { $__kvmOutput | Out-String -Width 160 } catch { $__kvmErrors.Add("formatting: $_"); '' }
    $__kvmResults.Add([pscustomobject]@{ Id = $__kvmStep.Id; Ran = $true; Errors = @($__kvmErrors); Output = $__kvmText })
}
ConvertTo-Json -InputObject @($__kvmResults) -Depth 4 | Set-Content -LiteralPath $ResultFile
