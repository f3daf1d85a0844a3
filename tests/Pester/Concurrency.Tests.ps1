#Requires -Version 7.4
# Several processes at once on one host root: creators that attach to one VM, a lister, a remover; and two
# writers on one image. Every command either succeeds or fails with a typed error, and no update is lost.

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $script:kvm1Xml = Join-Path $PSScriptRoot '../../examples/kvm1.xml'

    function Start-Child([string] $Root, [string] $Body, [string] $Folder) {
        # Each child waits for the 'go' file so that all of them start their work together.
        $script = Join-Path $Folder ("child-" + [guid]::NewGuid().ToString('N') + '.ps1')
        @"
`$ErrorActionPreference = 'Stop'
Import-Module '$($env:KVMSTORAGE_TEST_MODULE -replace "'", "''")'
function Out-Result([hashtable] `$r) { [Console]::Out.WriteLine((`$r | ConvertTo-Json -Compress)) }
function Get-Id(`$e) { "`$(`$e.FullyQualifiedErrorId)" }
while (-not (Test-Path '$Folder/go')) { Start-Sleep -Milliseconds 20 }
$Body
"@ | Set-Content -LiteralPath $script
        $exe = [Environment]::ProcessPath
        $first = [Environment]::GetCommandLineArgs()[0]
        $psi = [Diagnostics.ProcessStartInfo]::new($exe)
        if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'dotnet' -and $first -like '*.dll') { $psi.ArgumentList.Add($first) }
        foreach ($a in '-NoProfile', '-NonInteractive', '-File', $script) { $psi.ArgumentList.Add($a) }
        $psi.RedirectStandardOutput = $true
        $psi.RedirectStandardError = $true
        $psi.Environment['KVMSTORAGE_ROOT'] = $Root
        $p = [Diagnostics.Process]::Start($psi)
        [pscustomobject]@{ Process = $p; Out = $p.StandardOutput.ReadToEndAsync(); Err = $p.StandardError.ReadToEndAsync() }
    }

    function New-VMHostRoot {
        # A fresh root with the default pool and VM kvm1 (examples/kvm1.xml).
        $root = New-TestHostRoot
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
        $qemu = Join-Path $root 'etc/libvirt/qemu'
        New-Item -ItemType Directory -Force $qemu | Out-Null
        Copy-Item $kvm1Xml (Join-Path $qemu 'kvm1.xml')
        $root
    }

    function Receive-Child($Child) {
        $Child.Process.WaitForExit(600000) | Should -BeTrue
        $err = $Child.Err.Result
        $err | Should -BeNullOrEmpty -Because 'a child wrote to stderr'
        @($Child.Out.Result -split "`n" | Where-Object { $_.Trim().StartsWith('{') } | ForEach-Object { $_ | ConvertFrom-Json })
    }
}

Describe 'Concurrent creators, a lister and a remover on one pool and one VM' {
    BeforeAll {
        $script:root = New-VMHostRoot
        $script:originalDisks = @(Get-VMDisk -VMName kvm1)
        foreach ($i in 1..6) { New-Volume -Pool default -Name "old$i.qcow2" -Size 16MB | Out-Null }
        $script:folder = Join-Path $TestDrive ('children-' + [guid]::NewGuid().ToString('N').Substring(0, 6))
        New-Item -ItemType Directory $folder | Out-Null

        $children = [Collections.Generic.List[object]]::new()
        foreach ($w in 1..8) {
            $children.Add((Start-Child $root @"
foreach (`$k in 1..2) {
    `$name = 'w$w-' + `$k + '.qcow2'
    try { `$v = New-Volume -Pool default -Name `$name -Size 16MB; Out-Result @{ Role = 'creator'; Op = 'create'; Name = `$name; Ok = `$true } }
    catch { Out-Result @{ Role = 'creator'; Op = 'create'; Name = `$name; Ok = `$false; Id = (Get-Id `$_); Message = "`$_" }; continue }
    try { `$d = `$v | Add-VMDisk -VMName kvm1; Out-Result @{ Role = 'creator'; Op = 'attach'; Name = `$name; Ok = `$true; Target = `$d.Target; Source = `$d.Source } }
    catch { Out-Result @{ Role = 'creator'; Op = 'attach'; Name = `$name; Ok = `$false; Id = (Get-Id `$_); Message = "`$_" } }
}
"@ $folder))
        }
        $children.Add((Start-Child $root @'
foreach ($k in 1..15) {
    $vols = @(Get-Volume -Pool default -ErrorVariable e -ErrorAction SilentlyContinue)
    Out-Result @{ Role = 'lister'; Op = 'Get-Volume'; Ok = ($e.Count -eq 0); Id = (@($e | ForEach-Object { Get-Id $_ }) -join ';'); Message = "$e"; Count = $vols.Count }
    $disks = @(Get-VMDisk -VMName kvm1 -ErrorVariable e2 -ErrorAction SilentlyContinue)
    Out-Result @{ Role = 'lister'; Op = 'Get-VMDisk'; Ok = ($e2.Count -eq 0); Id = (@($e2 | ForEach-Object { Get-Id $_ }) -join ';'); Message = "$e2"; Count = $disks.Count }
}
'@ $folder))
        $children.Add((Start-Child $root @'
foreach ($i in 1..6) {
    try { Remove-Volume -Pool default -Name "old$i.qcow2" -Confirm:$false; Out-Result @{ Role = 'remover'; Op = 'remove'; Name = "old$i.qcow2"; Ok = $true } }
    catch { Out-Result @{ Role = 'remover'; Op = 'remove'; Name = "old$i.qcow2"; Ok = $false; Id = (Get-Id $_); Message = "$_" } }
}
'@ $folder))
        New-Item -ItemType File (Join-Path $folder 'go') | Out-Null
        $script:results = @($children | ForEach-Object { Receive-Child $_ })
        $env:KVMSTORAGE_ROOT = $root
        $script:finalDisks = @(Get-VMDisk -VMName kvm1)
        $script:poolFiles = @(Get-ChildItem -Force -LiteralPath (Join-Path $root 'var/lib/libvirt/images') -File | ForEach-Object Name)
    }

    It 'hears back from every command' {
        @($results | Where-Object Role -EQ creator).Count | Should -Be 32
        @($results | Where-Object Role -EQ lister).Count | Should -Be 30
        @($results | Where-Object Role -EQ remover).Count | Should -Be 6
    }

    It 'fails only with typed, clear errors' {
        foreach ($r in $results | Where-Object { -not $_.Ok }) {
            $r.Id | Should -Match '^[A-Z][A-Za-z]+,KvmStorage' -Because "$($r.Role) $($r.Op) failed with '$($r.Id)': $($r.Message)"
            $r.Message | Should -Not -BeNullOrEmpty
        }
    }

    It 'creates every volume and lists the pool without errors while others write' {
        @($results | Where-Object { $_.Op -eq 'create' -and -not $_.Ok }) | Should -BeNullOrEmpty
        @($results | Where-Object { $_.Role -eq 'lister' -and -not $_.Ok }) | Should -BeNullOrEmpty
        foreach ($r in $results | Where-Object { $_.Op -eq 'create' }) { $poolFiles | Should -Contain $r.Name }
        $poolFiles | Where-Object { $_ -like '.kvmstorage-tmp-*' } | Should -BeNullOrEmpty
    }

    It 'leaves the VM with exactly the original disks plus those reported attached, targets unique' {
        $attached = @($results | Where-Object { $_.Op -eq 'attach' -and $_.Ok })
        $expected = @($originalDisks.Target) + @($attached.Target) | Sort-Object
        @($finalDisks.Target) | Sort-Object | Should -Be $expected
        @($finalDisks.Target | Sort-Object -Unique).Count | Should -Be $finalDisks.Count
        foreach ($a in $attached) { ($finalDisks | Where-Object Target -EQ $a.Target).Source | Should -Be $a.Source }
        $attached.Count | Should -Be 16 -Because 'no attach should fail: the domain store serialises writers'
    }

    It 'removes exactly the volumes reported removed' {
        foreach ($r in $results | Where-Object Role -EQ remover) {
            if ($r.Ok) { $poolFiles | Should -Not -Contain $r.Name } else { $poolFiles | Should -Contain $r.Name }
        }
    }

    It 'keeps the domain definition valid' {
        if (-not (Get-Command virt-xml-validate -ErrorAction SilentlyContinue)) { Set-ItResult -Skipped -Because 'virt-xml-validate is not installed'; return }
        $out = virt-xml-validate (Join-Path $root 'etc/libvirt/qemu/kvm1.xml') domain 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "$out"
    }
}

Describe 'Listers while others create and remove volumes' {
    # A volume removed (or created, through a temporary and a rename) by another process between a lister's read of
    # the folder and its open of the file is a normal event: the listing shows it or not, never an error.
    BeforeAll {
        $script:root = New-VMHostRoot
        foreach ($i in 1..12) { New-Volume -Pool default -Name "keep$i.qcow2" -Size 16MB | Out-Null }
        $script:folder = Join-Path $TestDrive ('churn-' + [guid]::NewGuid().ToString('N').Substring(0, 6))
        New-Item -ItemType Directory $folder | Out-Null

        $script:listers = foreach ($l in 1..4) {
            Start-Child $root @"
foreach (`$k in 1..200) {
    `$vols = @(Get-Volume -Pool default -ErrorVariable e -ErrorAction SilentlyContinue)
    Out-Result @{ Role = 'lister'; Op = 'Get-Volume'; Ok = (`$e.Count -eq 0); Id = (@(`$e | ForEach-Object { Get-Id `$_ }) -join ';'); Message = "`$e"; Count = `$vols.Count; Keep = @(`$vols | Where-Object Name -Like 'keep*').Count }
}
"@ $folder
        }
        # Removers churn until every lister is done: each round creates two volumes and removes them again.
        $script:removers = foreach ($r in 1..4) {
            Start-Child $root @"
`$round = 0
while (-not (Test-Path '$folder/stop') -and `$round -lt 2000) {
    `$round++
    foreach (`$n in "r$r-`$round-a.qcow2", "r$r-`$round-b.raw") {
        `$fmt = if (`$n -like '*.raw') { 'raw' } else { 'qcow2' }
        try { New-Volume -Pool default -Name `$n -Size 8MB -Format `$fmt | Out-Null }
        catch { Out-Result @{ Role = 'remover'; Op = 'create'; Name = `$n; Ok = `$false; Id = (Get-Id `$_); Message = "`$_" } }
    }
    foreach (`$n in "r$r-`$round-a.qcow2", "r$r-`$round-b.raw") {
        try { Remove-Volume -Pool default -Name `$n -Confirm:`$false; Out-Result @{ Role = 'remover'; Op = 'remove'; Name = `$n; Ok = `$true } }
        catch { Out-Result @{ Role = 'remover'; Op = 'remove'; Name = `$n; Ok = `$false; Id = (Get-Id `$_); Message = "`$_" } }
    }
}
"@ $folder
        }
        New-Item -ItemType File (Join-Path $folder 'go') | Out-Null
        $script:listed = @($listers | ForEach-Object { Receive-Child $_ })
        New-Item -ItemType File (Join-Path $folder 'stop') | Out-Null
        $script:removed = @($removers | ForEach-Object { Receive-Child $_ })
        $env:KVMSTORAGE_ROOT = $root
    }

    It 'lists 800 times with no error while volumes come and go' {
        $listed.Count | Should -Be 800
        foreach ($r in $listed | Where-Object { -not $_.Ok }) { $r.Ok | Should -BeTrue -Because "a listing failed with '$($r.Id)': $($r.Message)" }
        # Every listing holds every volume nobody touched: no partial object, no lost entry.
        @($listed | Where-Object Keep -NE 12) | Should -BeNullOrEmpty
    }

    It 'really raced: the removers created and removed volumes while the listers ran' {
        @($removed | Where-Object { $_.Op -eq 'remove' -and $_.Ok }).Count | Should -BeGreaterThan 8
        @($removed | Where-Object { -not $_.Ok }) | Should -BeNullOrEmpty
        @($listed | Where-Object { $_.Count -gt 12 }).Count | Should -BeGreaterThan 0 -Because 'some listing should have seen a churned volume'
    }

    It 'leaves only the untouched volumes and no temporary' {
        @(Get-ChildItem -Force -LiteralPath (Join-Path $root 'var/lib/libvirt/images') -File | ForEach-Object Name | Sort-Object) |
            Should -Be @(1..12 | ForEach-Object { "keep$_.qcow2" } | Sort-Object)
    }
}

Describe 'Two writers on one image' {
    BeforeAll {
        $script:root = New-TestHostRoot
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
        $script:vol = New-Volume -Pool default -Name held.qcow2 -Size 64MB
        $script:folder = Join-Path $TestDrive ('holder-' + [guid]::NewGuid().ToString('N').Substring(0, 6))
        New-Item -ItemType Directory $folder | Out-Null
        # Another process holds the image as a writer (QEMU-compatible OFD locks) until the 'release' file appears.
        $script:holder = Start-Child $root @"
`$lock = [KvmStorage.Core.Images.ImageLock]::AcquireForWrite('$($vol.LocalPath)')
Out-Result @{ Role = 'holder'; Ok = `$true }
[Console]::Out.Flush()
while (-not (Test-Path '$folder/release')) { Start-Sleep -Milliseconds 50 }
`$lock.Dispose()
"@ $folder
        New-Item -ItemType File (Join-Path $folder 'go') | Out-Null
        $sw = [Diagnostics.Stopwatch]::StartNew()
        while (-not (Test-Path -LiteralPath (Join-Path $folder 'never')) -and $sw.Elapsed.TotalSeconds -lt 300) {
            # The holder has the lock once qemu-img (or our own writer) is refused.
            try { [KvmStorage.Core.Images.ImageLock]::EnsureNotInUse($vol.LocalPath, $true) } catch { break }
            Start-Sleep -Milliseconds 100
        }
        $script:before = Get-TreeSnapshot (Join-Path $root 'var/lib/libvirt/images')
    }
    AfterAll {
        New-Item -ItemType File (Join-Path $folder 'release') -ErrorAction SilentlyContinue | Out-Null
        $holder.Process.WaitForExit(120000) | Out-Null
    }

    It 'refuses <Case> with ImageInUse and changes nothing' -ForEach @(
        @{ Case = 'Resize-Volume'; Action = { Resize-Volume -Pool default -Name held.qcow2 -Size 128MB -ErrorAction Stop } }
        @{ Case = 'Remove-Volume'; Action = { Remove-Volume -Pool default -Name held.qcow2 -Confirm:$false -ErrorAction Stop } }
    ) {
        { & $Action } | Should -Throw -ErrorId 'ImageInUse,*'
        Get-TreeSnapshot (Join-Path $root 'var/lib/libvirt/images') | Should -Be $before
    }

    It 'lets the second writer in once the first is gone' {
        New-Item -ItemType File (Join-Path $folder 'release') | Out-Null
        $holder.Process.WaitForExit(120000) | Should -BeTrue
        (Resize-Volume -Pool default -Name held.qcow2 -Size 128MB -PassThru).Capacity | Should -Be 128MB
    }
}
