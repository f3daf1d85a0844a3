#Requires -Version 7.4
# The short form of the crash-safety harness (tests/Reliability): each operation class of CrashOperations.ps1 is
# run in a child pwsh and killed with SIGKILL at seeded random moments, then the host root is checked (qemu-img
# check, virt-xml-validate, listings, no half-written file under a final name) and the command is run again.
# KVMSTORAGE_CRASH_TRIALS sets the trials per class (default 3); KVMSTORAGE_CRASH_SEED the seed. The long form:
#   dotnet pwsh tests/Reliability/Invoke-CrashSafety.ps1 -Trials 200

BeforeDiscovery {
    $script:operations = @(& (Join-Path $PSScriptRoot '../Reliability/CrashOperations.ps1') | ForEach-Object { @{ Name = $_.Name; KnownIssue = $_.KnownIssue } })
}

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot '../Reliability/CrashHarness.psm1') -Force
    $script:trials = if ($env:KVMSTORAGE_CRASH_TRIALS) { [int]$env:KVMSTORAGE_CRASH_TRIALS } else { 3 }
    $script:seed = if ($env:KVMSTORAGE_CRASH_SEED) { [int]$env:KVMSTORAGE_CRASH_SEED } else { 20261125 }
    $script:savedRoot = $env:KVMSTORAGE_ROOT
}

AfterAll { $env:KVMSTORAGE_ROOT = $savedRoot }

Describe 'Crash safety under SIGKILL' -Tag CrashSafety {
    It '<Name> leaves consistent images and definitions and runs again' -ForEach $operations {
        # A class whose failure is understood but not fixed yet (see its KnownIssue) is run by the long form only.
        if ($KnownIssue) { Set-ItResult -Skipped -Because $KnownIssue; return }
        $work = Join-Path $TestDrive ("crash-$Name")
        New-Item -ItemType Directory -Force $work | Out-Null
        $results = @(Invoke-CrashTrial -Module $env:KVMSTORAGE_TEST_MODULE -WorkFolder $work -Trials $trials -Seed $seed -Operation $Name)
        $results.Count | Should -Be ($trials + 1)
        $report = @($results | Where-Object { $_.Problems.Count -gt 0 } | ForEach-Object { "trial $($_.Trial) (kill at $($_.DelayMs) of ~$($_.DurationMs) ms): $($_.Problems -join ' | ')" })
        $report | Should -BeNullOrEmpty
    }
}
