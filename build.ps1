#Requires -Version 7.4
<#
.SYNOPSIS
    Builds, documents, packages and tests the KvmStorage module.
.DESCRIPTION
    Tasks:
      Clean       remove out/ and the build folders
      Build       compile the core and the cmdlets (Release)
      Help        turn en-US/*.md (PlatyPS schema) into en-US/KvmStorage.dll-Help.xml (.config/help/ConvertTo-MamlHelp.ps1)
      HelpMarkdown package, then create en-US/<Cmdlet>.md for cmdlets without one and refresh the SYNTAX
                  and parameter yaml blocks of the others from the built cmdlets (keeps written text;
                  .config/help/New-HelpMarkdown.ps1)
      Package     lay out the module in out/KvmStorage/<version>/ (Build + Help first) and make
                  out/repository/KvmStorage.<version>.nupkg for Install-PSResource
      Quickstart  package, then run examples/quickstart.ps1 against a sandbox host root
      Test        package, install the test oracles (as root on Debian), run xunit and Pester,
                  print "Tests: N passed, N failed, N skipped", fail on any failure
    Every native command that fails stops the build.
.EXAMPLE
    dotnet tool restore && dotnet pwsh ./build.ps1 -Task Test
.EXAMPLE
    dotnet pwsh ./build.ps1 -Task Quickstart -HostRoot /tmp/kvm-sandbox
#>
[CmdletBinding()]
param(
    [ValidateSet('Clean', 'Build', 'Help', 'HelpMarkdown', 'Package', 'Quickstart', 'Test', 'InstallOracles')]
    [string[]] $Task = @('Package'),

    # The host root the quickstart works on: a fresh sandbox folder by default, '/' on a real KVM host.
    [string] $HostRoot,

    # Pester tags to leave out (for example Oracle, Daemon).
    [string[]] $ExcludeTag = @(),

    [ValidateSet('Debug', 'Release')]
    [string] $Configuration = 'Release'
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
$PSNativeCommandUseErrorActionPreference = $true

$RepoRoot = $PSScriptRoot
$OutRoot = Join-Path $RepoRoot 'out'
$Version = ([xml](Get-Content -Raw (Join-Path $RepoRoot 'Directory.Build.props'))).Project.PropertyGroup.KvmStorageVersion | Where-Object { $_ } | Select-Object -First 1
$ModuleDir = Join-Path $OutRoot "KvmStorage/$Version"
$ResultsDir = Join-Path $OutRoot 'test-results'
# The help tooling: en-US/*.md to MAML, and the markdown drafts and refreshes from the built cmdlets.
$HelpTools = Join-Path $RepoRoot '.config/help'

# What ships, and from where: the package task fails if one is missing.
$ModuleFiles = [ordered]@{
    'KvmStorage.dll'                   = "src/KvmStorage/bin/$Configuration/net8.0/KvmStorage.dll"
    'KvmStorage.Core.dll'              = "src/KvmStorage/bin/$Configuration/net8.0/KvmStorage.Core.dll"
    'ZstdSharp.dll'                    = "src/KvmStorage/bin/$Configuration/net8.0/ZstdSharp.dll"
    'KvmStorage.Format.ps1xml'         = 'src/KvmStorage/KvmStorage.Format.ps1xml'
    'en-US/about_KvmStorage.help.txt'  = 'en-US/about_KvmStorage.help.txt'
}

function Write-Step([string] $Message) { Write-Host "==> $Message" -ForegroundColor Cyan }

function Invoke-Clean {
    Write-Step 'Clean'
    foreach ($dir in @($OutRoot) + (Get-ChildItem -Path (Join-Path $RepoRoot 'src'), (Join-Path $RepoRoot 'tests'), (Join-Path $RepoRoot 'fuzz'), (Join-Path $RepoRoot 'bench') -Directory -Recurse -Include bin, obj -ErrorAction SilentlyContinue).FullName) {
        if ($dir -and (Test-Path $dir)) { Remove-Item -Recurse -Force $dir }
    }
}

function Invoke-Build {
    Write-Step "Build $Version ($Configuration)"
    dotnet build (Join-Path $RepoRoot 'src/KvmStorage/KvmStorage.csproj') -c $Configuration -nologo -v:q
}

function Invoke-Help {
    Write-Step 'Help'
    $target = Join-Path $ModuleDir 'en-US'
    New-Item -ItemType Directory -Force -Path $target | Out-Null
    & (Join-Path $HelpTools 'ConvertTo-MamlHelp.ps1') -MarkdownPath (Join-Path $RepoRoot 'en-US') -OutputFile (Join-Path $target 'KvmStorage.dll-Help.xml')
}

function Invoke-HelpMarkdown {
    # Without the Help step: drafts with placeholders are exactly what the converter refuses.
    Invoke-Package -SkipHelp
    Write-Step 'HelpMarkdown: en-US/*.md from the built cmdlets, in a fresh pwsh'
    $generator = Join-Path $HelpTools 'New-HelpMarkdown.ps1'
    $xmlDoc = Join-Path $RepoRoot "src/KvmStorage/bin/$Configuration/net8.0/KvmStorage.xml"
    & dotnet pwsh -NoProfile -NonInteractive -File $generator -ModulePath (Join-Path $ModuleDir 'KvmStorage.psd1') -MarkdownPath (Join-Path $RepoRoot 'en-US') -XmlDocumentationPath $xmlDoc
}

function Invoke-Package([switch] $SkipHelp) {
    Invoke-Build
    Write-Step "Package into $ModuleDir"
    if (Test-Path $ModuleDir) { Remove-Item -Recurse -Force $ModuleDir }
    New-Item -ItemType Directory -Force -Path (Join-Path $ModuleDir 'en-US') | Out-Null
    foreach ($entry in $ModuleFiles.GetEnumerator()) {
        $source = Join-Path $RepoRoot $entry.Value
        if (-not (Test-Path $source)) { throw "Package: '$($entry.Value)' is missing." }
        Copy-Item $source (Join-Path $ModuleDir $entry.Key)
    }
    $manifest = Get-Content -Raw (Join-Path $RepoRoot 'KvmStorage.psd1')
    $manifest = $manifest -replace "ModuleVersion\s*=\s*'[^']*'", "ModuleVersion          = '$Version'"
    Set-Content -Path (Join-Path $ModuleDir 'KvmStorage.psd1') -Value $manifest -NoNewline
    if (-not $SkipHelp) { Invoke-Help }
    $null = Test-ModuleManifest (Join-Path $ModuleDir 'KvmStorage.psd1')
    if (-not $SkipHelp) {
        # The installable package: out/repository/KvmStorage.<version>.nupkg, a folder Install-PSResource can use as
        # a repository (README, "Install").
        $repository = Join-Path $OutRoot 'repository'
        New-Item -ItemType Directory -Force -Path $repository | Out-Null
        Get-ChildItem -LiteralPath $repository -Filter 'KvmStorage.*.nupkg' | Remove-Item -Force
        Compress-PSResource -Path $ModuleDir -DestinationPath $repository
        Write-Step "Package $(Join-Path $repository "KvmStorage.$Version.nupkg")"
    }
}

function Test-IsRoot { (& id -u) -eq '0' }

function Invoke-InstallOracles {
    # The reference tools the tests compare against; never needed at run time.
    $packages = [ordered]@{
        'qemu-img'          = 'qemu-utils'
        'qemu-io'           = 'qemu-utils'
        'virsh'             = 'libvirt-clients'
        'virt-xml-validate' = 'libvirt-clients'
        'xmllint'           = 'libxml2-utils'
        # The Daemon-tagged tests start their own libvirtd and a small TCG domain.
        '/usr/sbin/libvirtd'          = 'libvirt-daemon-system'
        '/usr/bin/qemu-system-x86_64' = 'qemu-system-x86'
        # libvirt-daemon holds the dir, fs, netfs, logical, disk, iscsi, scsi and mpath storage backends; the live
        # pool suites also define rbd and gluster pools, whose backends are packaged apart (and only recommended).
        "/usr/lib/$(& uname -m)-linux-gnu/libvirt/storage-backend/libvirt_storage_backend_rbd.so"     = 'libvirt-daemon-driver-storage-rbd'
        "/usr/lib/$(& uname -m)-linux-gnu/libvirt/storage-backend/libvirt_storage_backend_gluster.so" = 'libvirt-daemon-driver-storage-gluster'
        # The quickstart test enters the daemon's mount namespace.
        'nsenter'                     = 'util-linux'
        # SASL authentication on the test daemon's TCP listener: a private sasldb and the DIGEST-MD5 plugin.
        'saslpasswd2'                 = 'sasl2-bin'
        "/usr/lib/$(& uname -m)-linux-gnu/sasl2/libdigestmd5.so" = 'libsasl2-modules'
    }
    $missing = @($packages.GetEnumerator() | Where-Object { -not (Get-Command $_.Key -ErrorAction SilentlyContinue) -and -not (Test-Path -LiteralPath $_.Key) } | ForEach-Object Value | Select-Object -Unique)
    if ($missing.Count -eq 0) { return }
    if ((Test-IsRoot) -and (Test-Path /etc/debian_version) -and (Get-Command apt-get -ErrorAction SilentlyContinue)) {
        Write-Step "Install test oracles: $($missing -join ', ')"
        $env:DEBIAN_FRONTEND = 'noninteractive'
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 @missing | Out-Null
    }
    else {
        Write-Warning "Oracle packages missing ($($missing -join ', ')) and not root on Debian: the oracle tests will be skipped."
    }
}

function Get-PesterModulePath {
    dotnet restore (Join-Path $RepoRoot 'tests/Dependencies/TestDependencies.csproj') -v:q | Out-Null
    $proj = [xml](Get-Content -Raw (Join-Path $RepoRoot 'tests/Dependencies/TestDependencies.csproj'))
    $pesterVersion = ($proj.Project.ItemGroup.PackageDownload | Where-Object Include -EQ 'Pester').Version.Trim('[', ']')
    $packages = $env:NUGET_PACKAGES
    if (-not $packages) { $packages = ((dotnet nuget locals global-packages --list) -replace '^global-packages:\s*', '').Trim() }
    $path = Join-Path $packages "pester/$pesterVersion/tools/Pester.psd1"
    if (-not (Test-Path $path)) { throw "Pester $pesterVersion was not restored to $path." }
    $path
}

function Read-TrxCounts([string] $Path) {
    $trx = [xml](Get-Content -Raw $Path)
    $c = $trx.TestRun.ResultSummary.Counters
    [pscustomobject]@{ Passed = [int]$c.passed; Failed = [int]$c.failed + [int]$c.error + [int]$c.timeout + [int]$c.aborted; Skipped = [int]$c.notExecuted }
}

function Invoke-Test {
    Invoke-Package
    Invoke-InstallOracles
    if (Test-Path $ResultsDir) { Remove-Item -Recurse -Force $ResultsDir }
    New-Item -ItemType Directory -Force -Path $ResultsDir | Out-Null
    $totals = [pscustomobject]@{ Passed = 0; Failed = 0; Skipped = 0 }

    Write-Step 'xunit: core library'
    $trx = Join-Path $ResultsDir 'core.trx'
    # Failing tests are counted below, not thrown: the run goes on to Pester and prints the totals.
    $PSNativeCommandUseErrorActionPreference = $false
    & dotnet test (Join-Path $RepoRoot 'tests/KvmStorage.Core.Tests/KvmStorage.Core.Tests.csproj') -c $Configuration -nologo -v:q `
        --logger "trx;LogFileName=$trx" --logger 'console;verbosity=minimal' 2>&1 | Out-Host
    $xunitExit = $LASTEXITCODE
    $PSNativeCommandUseErrorActionPreference = $true
    if (-not (Test-Path $trx)) { throw "xunit wrote no results (exit code $xunitExit)." }
    $core = Read-TrxCounts $trx
    Write-Host "xunit: $($core.Passed) passed, $($core.Failed) failed, $($core.Skipped) skipped"
    if ($xunitExit -ne 0 -and $core.Failed -eq 0) { $core.Failed = 1; Write-Warning "dotnet test exited $xunitExit." }

    Write-Step 'Pester: cmdlets, in a fresh pwsh'
    $pesterJson = Join-Path $ResultsDir 'pester.json'
    $env:KVMSTORAGE_TEST_MODULE = Join-Path $ModuleDir 'KvmStorage.psd1'
    $env:KVMSTORAGE_PESTER = Get-PesterModulePath
    $env:KVMSTORAGE_PESTER_RESULT = $pesterJson
    $env:KVMSTORAGE_PESTER_EXCLUDE = $ExcludeTag -join ','
    $PSNativeCommandUseErrorActionPreference = $false
    & dotnet pwsh -NoProfile -NonInteractive -File (Join-Path $RepoRoot 'tests/Invoke-PesterSuite.ps1') | Out-Host
    $PSNativeCommandUseErrorActionPreference = $true
    if (-not (Test-Path $pesterJson)) { throw 'Pester wrote no results.' }
    $pester = Get-Content -Raw $pesterJson | ConvertFrom-Json

    foreach ($part in @($core, $pester)) {
        $totals.Passed += $part.Passed; $totals.Failed += $part.Failed; $totals.Skipped += $part.Skipped
    }
    Write-Host "Tests: $($totals.Passed) passed, $($totals.Failed) failed, $($totals.Skipped) skipped"
    if ($totals.Failed -gt 0) { exit 1 }
}

function Invoke-Quickstart {
    Invoke-Package
    $root = $HostRoot
    if (-not $root) { $root = Join-Path ([IO.Path]::GetTempPath()) "kvmstorage-quickstart-$([guid]::NewGuid().ToString('N').Substring(0, 8))" }
    Write-Step "Quickstart against host root $root"
    $PSNativeCommandUseErrorActionPreference = $false
    & dotnet pwsh -NoProfile -NonInteractive -File (Join-Path $RepoRoot 'examples/quickstart.ps1') -HostRoot $root -ModulePath (Join-Path $ModuleDir 'KvmStorage.psd1')
    if ($LASTEXITCODE -ne 0) { throw "The quickstart failed (exit code $LASTEXITCODE)." }
}

Push-Location $RepoRoot
try {
    foreach ($t in $Task) {
        switch ($t) {
            'Clean' { Invoke-Clean }
            'Build' { Invoke-Build }
            'Help' { Invoke-Help }
            'HelpMarkdown' { Invoke-HelpMarkdown }
            'Package' { Invoke-Package }
            'Quickstart' { Invoke-Quickstart }
            'Test' { Invoke-Test }
            'InstallOracles' { Invoke-InstallOracles }
        }
    }
}
finally {
    Pop-Location
}
