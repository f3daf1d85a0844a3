#Requires -Version 7.4
# The main job on a real host: the README's quickstart command, exactly as the README gives it, with -HostRoot /,
# run inside the mount namespace of a private libvirtd (where /etc/libvirt, /var/lib/libvirt and /run/libvirt are
# the daemon's own scratch folders), so the module finds the daemon on /run/libvirt/libvirt-sock and works through
# libvirt's API as it would on a KVM host. virsh on the same socket is the oracle. Tagged Daemon.

BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot 'LibvirtDaemon.psm1') -Force
    $script:skipReason = Get-TestLibvirtdSkipReason -NeedEmulator
    if (-not $skipReason -and -not (Get-Command nsenter -ErrorAction SilentlyContinue)) { $script:skipReason = 'nsenter is not installed (package util-linux)' }
    if ($skipReason) { Write-Host "Quickstart on a live host skipped: $skipReason" -ForegroundColor Yellow }
}

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'LibvirtDaemon.psm1') -Force
    $script:repo = (Resolve-Path (Join-Path $PSScriptRoot '../..')).Path

    # The README's real-host command, read from the README so that the test and the document cannot drift apart.
    $script:readmeCommand = @(Get-Content (Join-Path $repo 'README.md') | Where-Object { $_ -match '^\s{4}dotnet tool restore && dotnet pwsh \./build\.ps1 -Task Quickstart -HostRoot /\s*$' } | ForEach-Object Trim)

    function Invoke-Virsh { $out = & virsh -q -c $daemon.Uri @args 2>&1; if ($LASTEXITCODE) { throw "virsh $args failed: $out" }; @($out | ForEach-Object { "$_".Trim() } | Where-Object { $_ }) }

    function Invoke-Quickstart {
        # Inside the daemon's mount namespace, from the repository, as a user types it (a fresh shell, no root set).
        $log = Join-Path $TestDrive ("quickstart-" + [guid]::NewGuid().ToString('N').Substring(0, 6) + '.log')
        $command = "cd '$repo' && unset KVMSTORAGE_ROOT && $($readmeCommand[0])"
        & nsenter -t $daemon.Pid -m -- sh -c $command *> $log
        [pscustomobject]@{ ExitCode = $LASTEXITCODE; Output = (Get-Content -Raw $log) }
    }
}

Describe 'The README quickstart on a host whose libvirtd runs' -Tag Daemon -Skip:([bool]$skipReason) {
    BeforeAll {
        $script:root = Join-Path $TestDrive ('qs-' + [guid]::NewGuid().ToString('N').Substring(0, 8))
        $script:daemon = Start-TestLibvirtd -Root $root
        # kvm1 exists on a real host before the quickstart runs (it never defines a VM there).
        $null = Invoke-Virsh define (Join-Path $repo 'examples/kvm1.xml')
        # The real host's own image folder must not be touched by a run inside the namespace.
        $script:hostImages = '/var/lib/libvirt/images'
        $script:hostImagesBefore = if (Test-Path $hostImages) { @(Get-ChildItem -Force $hostImages | ForEach-Object Name) } else { @() }
        $script:first = Invoke-Quickstart
    }
    AfterAll {
        if ($daemon) { Stop-TestLibvirtd $daemon }
    }

    It 'finds exactly one real-host command in the README' {
        $readmeCommand.Count | Should -Be 1
    }

    It 'completes every step' {
        $first.ExitCode | Should -Be 0 -Because $first.Output
        $first.Output | Should -Match 'qemu:///system' -Because 'the objects should come from libvirt, not from the files'
    }

    It 'leaves the default pool as pool-define, pool-build, pool-start and pool-autostart would' {
        $info = (Invoke-Virsh pool-info default) -join "`n"
        $info | Should -Match 'State:\s+running'
        $info | Should -Match 'Persistent:\s+yes'
        $info | Should -Match 'Autostart:\s+yes'
        (Invoke-Virsh pool-dumpxml default) -join "`n" | Should -Match '<path>/var/lib/libvirt/images</path>'
        Test-Path -LiteralPath (Join-Path $root 'etc/libvirt/storage/autostart/default.xml') | Should -BeTrue
    }

    It 'creates the two volumes that libvirt lists, raw and qcow2, 8 GiB each' {
        $names = @(Invoke-Virsh vol-list default | ForEach-Object { ($_ -split '\s+')[0] })
        $names | Should -Contain 'kvm1.img'
        $names | Should -Contain 'kvm1-data.qcow2'
        foreach ($v in @{ Name = 'kvm1.img'; Format = 'raw' }, @{ Name = 'kvm1-data.qcow2'; Format = 'qcow2' }) {
            $xml = [xml]((Invoke-Virsh vol-dumpxml --pool default $v.Name) -join "`n")
            $xml.volume.target.format.type | Should -Be $v.Format
            [long]$xml.volume.capacity.'#text' | Should -Be 8GB
        }
        # The files are the daemon's, in its private /var/lib/libvirt: the raw one sparse and owner-only.
        $img = Get-Item -LiteralPath (Join-Path $root 'var/lib/libvirt/images/kvm1.img')
        $img.Length | Should -Be 8GB
        $img.UnixFileMode | Should -Be ([IO.UnixFileMode]'UserRead, UserWrite')
    }

    It 'attaches kvm1.img to kvm1 as its next free virtio disk' {
        $disks = @(Invoke-Virsh domblklist kvm1 --details)
        $line = @($disks | Where-Object { $_ -match '/var/lib/libvirt/images/kvm1\.img$' })
        $line.Count | Should -Be 1
        $line[0] | Should -Match '^file\s+disk\s+vda\s+'
        $xml = [xml]((Invoke-Virsh dumpxml --inactive kvm1) -join "`n")
        $disk = @($xml.domain.devices.disk | Where-Object { $_.target.dev -eq 'vda' })[0]
        $disk.target.bus | Should -Be 'virtio'
        $disk.driver.type | Should -Be 'raw'
    }

    It 'touches nothing of the real host outside the namespace' {
        $after = if (Test-Path $hostImages) { @(Get-ChildItem -Force $hostImages | ForEach-Object Name) } else { @() }
        @($after) | Should -Be @($hostImagesBefore)
    }

    It 'can be run again: it finds the pool, the volumes and the disk and changes nothing' {
        $before = (Invoke-Virsh dumpxml --inactive kvm1) -join "`n"
        $again = Invoke-Quickstart
        $again.ExitCode | Should -Be 0 -Because $again.Output
        (Invoke-Virsh dumpxml --inactive kvm1) -join "`n" | Should -Be $before
        @(Invoke-Virsh vol-list default).Count | Should -Be 2
    }
}
