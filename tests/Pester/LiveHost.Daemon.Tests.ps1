#Requires -Version 7.4
# The live backend against a real libvirtd that these tests start (and stop) themselves in a private mount
# namespace, on a scratch host root: pools, volumes from the native engine, a pool defined offline, disk hot-plug
# into a small TCG domain, the qemu+tcp transport, and the faults. Tagged Daemon; skipped (with the reason) when
# not root or the daemon packages are missing.

BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot 'LibvirtDaemon.psm1') -Force
    $script:skipReason = Get-TestLibvirtdSkipReason
    $script:emulatorSkip = Get-TestLibvirtdSkipReason -NeedEmulator
    $script:saslSkip = Get-TestLibvirtdSkipReason -NeedSasl
    if ($saslSkip) { Write-Host "SASL authentication tests skipped: $saslSkip" -ForegroundColor Yellow }
}

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Join-Path $PSScriptRoot 'LibvirtDaemon.psm1') -Force
    $script:daemon = $null
    if (-not (Get-TestLibvirtdSkipReason)) {
        $script:root = New-TestHostRoot -Name daemon
        $script:images = Join-Path $root 'images'
        # Defined offline before the daemon starts: the daemon must load it from <root>/etc/libvirt/storage.
        New-StoragePool -Name offline-made -Path /srv/kvmstorage-offline-made -Autostart:$false
        # The TCP listener authenticates with SASL where the tools for a private sasldb are installed.
        $script:daemon = Start-TestLibvirtd -Root $root -ListenTcp -Sasl:(-not (Get-TestLibvirtdSkipReason -NeedSasl))
    }
}

AfterAll {
    Get-LibvirtHost | Disconnect-LibvirtHost
    if ($daemon) { Stop-TestLibvirtd $daemon }
}

Describe 'Live backend against libvirtd' -Tag Daemon -Skip:([bool]$skipReason) {
    BeforeAll {
        $script:conn = Connect-LibvirtHost -Uri $daemon.Uri
        function Invoke-Virsh { $out = & virsh -c $daemon.Uri @args 2>&1; if ($LASTEXITCODE) { throw "virsh $args failed: $out" }; $out | ForEach-Object { "$_".Trim() } | Where-Object { $_ } }
    }
    AfterAll { Get-LibvirtHost | Disconnect-LibvirtHost }

    It 'loads the pool defined offline on its root' {
        (Invoke-Virsh pool-list --all --name) | Should -Contain 'offline-made'
        $pool = Get-StoragePool offline-made
        $pool.HostName | Should -Be $conn.Uri
        $pool.State | Should -BeExactly 'inactive'
        $pool.Path | Should -Be '/srv/kvmstorage-offline-made'
    }

    It 'refuses offline writes on a root whose daemon runs, naming Connect-LibvirtHost' {
        Disconnect-LibvirtHost -InputObject $conn
        try {
            (Get-StoragePool offline-made).HostName | Should -Be "offline:$root"
            { New-StoragePool -Name refused -Path /srv/refused } | Should -Throw -ErrorId 'LibvirtDaemonRunning,*'
            try { New-StoragePool -Name refused -Path /srv/refused } catch { $_.Exception.Message | Should -Match 'Connect-LibvirtHost' }
            Test-Path (Join-Path $root 'etc/libvirt/storage/refused.xml') | Should -BeFalse
        }
        finally { $script:conn = Connect-LibvirtHost -Uri $daemon.Uri }
    }

    It 'defines, builds, starts, refreshes, stops and undefines a pool that virsh sees' {
        $path = Join-Path $images 'lifecycle'
        $pool = New-StoragePool -Name lifecycle -Path $path -Build -PassThru
        $pool.State | Should -BeExactly 'inactive'
        Test-Path $path | Should -BeTrue
        (Invoke-Virsh pool-list --all --name) | Should -Contain 'lifecycle'

        Start-StoragePool lifecycle
        (Invoke-Virsh pool-info lifecycle) -join "`n" | Should -Match 'State:\s+running'
        $running = Get-StoragePool lifecycle
        $running.State | Should -BeExactly 'running'
        $running.Capacity | Should -BeGreaterThan 0

        Set-StoragePool lifecycle -Autostart $true
        (Invoke-Virsh pool-info lifecycle) -join "`n" | Should -Match 'Autostart:\s+yes'

        (Update-StoragePool lifecycle -PassThru).State | Should -BeExactly 'running'
        Stop-StoragePool lifecycle
        (Invoke-Virsh pool-info lifecycle) -join "`n" | Should -Match 'State:\s+inactive'
        Remove-StoragePool lifecycle -Confirm:$false
        (Invoke-Virsh pool-list --all --name) | Should -Not -Contain 'lifecycle'
    }

    It 'writes volumes with the native engine and libvirt lists them after the refresh' {
        $path = Join-Path $images 'vols'
        New-StoragePool -Name vols -Path $path -Build
        Start-StoragePool vols
        $v = New-Volume -Pool vols -Name disk1.qcow2 -Size 64MB -Format qcow2
        $v.Format | Should -BeExactly 'qcow2'
        (Invoke-Virsh vol-list vols) -join "`n" | Should -Match 'disk1\.qcow2'
        (Invoke-Virsh vol-info --pool vols disk1.qcow2) -join "`n" | Should -Match 'Capacity:\s+64\.00 MiB'
        & qemu-img check (Join-Path $path 'disk1.qcow2') | Out-Null
        $LASTEXITCODE | Should -Be 0

        Resize-Volume -Pool vols -Name disk1.qcow2 -Size 128MB
        (Invoke-Virsh vol-info --pool vols disk1.qcow2) -join "`n" | Should -Match 'Capacity:\s+128\.00 MiB'

        Remove-Volume -Pool vols -Name disk1.qcow2 -Confirm:$false
        (Invoke-Virsh vol-list vols) -join "`n" | Should -Not -Match 'disk1\.qcow2'
        (Get-StoragePool vols).VolumeCount | Should -Be 0
    }

    It 'refuses a volume in a stopped pool before writing anything' {
        $path = Join-Path $images 'stopped'
        New-StoragePool -Name stopped -Path $path -Build
        { New-Volume -Pool stopped -Name x.qcow2 -Size 1MB -ErrorAction Stop } | Should -Throw -ErrorId 'PoolNotActive,*'
        @(Get-ChildItem $path).Count | Should -Be 0
    }

    It 'reports a pool removed by someone else between two commands' {
        New-StoragePool -Name vanishing -Path (Join-Path $images 'vanishing') -Build
        $pool = Get-StoragePool vanishing
        Invoke-Virsh pool-undefine vanishing | Out-Null
        $err = $null
        $pool | Start-StoragePool -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -BeLike 'PoolNotFound,*'
        $err[0].Exception.Message | Should -Match "vanishing"
    }

    It 'reports XML libvirt rejects with its message' {
        { New-StoragePool -Name badfmt -FileSystem -SourceDevice /dev/sdz1 -SourceFormat gpt -Path /srv/badfmt -ErrorAction Stop } | Should -Throw -ErrorId 'LibvirtError92,*'
        $err = $null
        New-StoragePool -Name badfmt -FileSystem -SourceDevice /dev/sdz1 -SourceFormat gpt -Path /srv/badfmt -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].Exception.Message | Should -Match 'schema'   # libvirt's "XML document failed to validate against schema"
        $err[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
        (Invoke-Virsh pool-list --all --name) | Should -Not -Contain 'badfmt'
    }

    It 'refuses writes through a read-only connection, before the native engine writes anything' {
        $path = Join-Path $images 'ro'
        New-StoragePool -Name ro -Path $path -Build
        Start-StoragePool ro
        $null = New-Volume -Pool ro -Name keep.qcow2 -Size 1MB
        $ro = Connect-LibvirtHost -Uri $daemon.Uri -ReadOnly -NoDefault
        try {
            (Get-Volume -Connection $ro -Pool ro).Name | Should -Be 'keep.qcow2'
            $before = Get-TreeSnapshot $path
            $err = $null
            New-StoragePool -Connection $ro -Name ro2 -Path (Join-Path $images 'ro2') -ErrorVariable err -ErrorAction SilentlyContinue
            $err[0].FullyQualifiedErrorId | Should -BeLike 'LibvirtOperationDenied,*'
            $err[0].Exception.Message | Should -Match 'read only'   # libvirt's own message
            foreach ($write in { New-Volume -Connection $ro -Pool ro -Name new.qcow2 -Size 1MB -ErrorAction Stop },
                { Resize-Volume -Connection $ro -Pool ro -Name keep.qcow2 -Size 2MB -ErrorAction Stop },
                { Remove-Volume -Connection $ro -Pool ro -Name keep.qcow2 -Confirm:$false -ErrorAction Stop },
                # The cmdlets whose native engine edits image files directly, where libvirt's own check never runs.
                { New-VolumeSnapshot -Connection $ro -Volume (Join-Path $path keep.qcow2) -Name s1 -ErrorAction Stop },
                { Set-Volume -Connection $ro -Volume (Join-Path $path keep.qcow2) -BackingPath $null -ErrorAction Stop },
                { Optimize-Volume -Connection $ro -Volume (Join-Path $path keep.qcow2) -ErrorAction Stop },
                { Test-Volume -Connection $ro -Path (Join-Path $path keep.qcow2) -Repair Leaks -ErrorAction Stop },
                { Convert-Volume -Connection $ro -Volume (Get-Volume -Connection $ro -Pool ro -Name keep.qcow2) -Format raw -ErrorAction Stop },
                { Copy-Volume -Connection $ro -Volume (Get-Volume -Connection $ro -Pool ro -Name keep.qcow2) -Name copy.qcow2 -ErrorAction Stop }) {
                $write | Should -Throw -ErrorId 'LibvirtOperationDenied,*'
            }
            Get-TreeSnapshot $path | Should -Be $before
            (Invoke-Virsh pool-list --all --name) | Should -Not -Contain 'ro2'
        }
        finally { Disconnect-LibvirtHost -InputObject $ro }
    }

    It 'snapshots, rebases, merges, converts, copies, optimizes and checks volumes of a running pool; virsh agrees' {
        $path = Join-Path $images 'chain'
        New-StoragePool -Name chain -Path $path -Build
        Start-StoragePool chain
        $gold = New-Volume -Pool chain -Name gold.qcow2 -Size 8MB
        New-Volume -Pool chain -Name gold2.qcow2 -Size 8MB | Out-Null
        $clone = New-Volume -Pool chain -Name clone.qcow2 -BackingVolume $gold
        (Invoke-Virsh vol-dumpxml --pool chain clone.qcow2) -join ' ' | Should -Match ([regex]::Escape("<path>$path/gold.qcow2</path>"))

        New-VolumeSnapshot -Volume $clone -Name before-upgrade | Out-Null
        @(Get-Volume -Pool chain -Name clone.qcow2 | Get-VolumeSnapshot).Name | Should -Be @('before-upgrade')
        Restore-VolumeSnapshot -Volume $clone -Name before-upgrade -Confirm:$false
        Remove-VolumeSnapshot -Volume $clone -Name before-upgrade -Confirm:$false
        @(Get-Volume -Pool chain -Name clone.qcow2 | Get-VolumeSnapshot) | Should -BeNullOrEmpty

        $rebased = Get-Volume -Pool chain -Name clone.qcow2 | Set-Volume -BackingPath (Get-Volume -Pool chain -Name gold2.qcow2) -PassThru
        $rebased.BackingPath | Should -Be "$path/gold2.qcow2"
        (Invoke-Virsh vol-dumpxml --pool chain clone.qcow2) -join ' ' | Should -Match ([regex]::Escape("<path>$path/gold2.qcow2</path>"))

        Merge-Volume -Volume (Get-Volume -Pool chain -Name clone.qcow2) -RemoveOverlay -Confirm:$false
        (Invoke-Virsh vol-list chain --details | Select-String -SimpleMatch 'clone.qcow2') | Should -BeNullOrEmpty
        Test-Path (Join-Path $path 'clone.qcow2') | Should -BeFalse

        Convert-Volume -Volume (Get-Volume -Pool chain -Name gold2.qcow2) -Format raw -Name gold2.img | Out-Null
        Copy-Volume -Volume (Get-Volume -Pool chain -Name gold.qcow2) -Name gold-copy.qcow2 | Out-Null
        $names = @(Invoke-Virsh vol-list chain | Select-Object -Skip 2 | ForEach-Object { ($_ -split '\s+')[0] }) | Sort-Object
        $names | Should -Be @('gold-copy.qcow2', 'gold.qcow2', 'gold2.img', 'gold2.qcow2')
        (Get-Volume -Pool chain).Name | Sort-Object | Should -Be $names
        (Optimize-Volume -Volume (Get-Volume -Pool chain -Name gold.qcow2)) | Should -Not -BeNullOrEmpty
        (Get-Volume -Pool chain | Test-Volume).Passed | Should -Not -Contain $false
    }

    It 'lists pools over qemu+tcp on loopback' {
        $credential = @{}
        if ($daemon.SaslUser) { $credential.Credential = [pscredential]::new($daemon.SaslUser, (ConvertTo-SecureString $daemon.SaslPassword -AsPlainText -Force)) }
        $tcp = Connect-LibvirtHost -Uri $daemon.TcpUri -NoDefault @credential
        $tcp.Uri | Should -Be $daemon.TcpUri
        $pools = @(Get-StoragePool -Connection $tcp)
        $pools.Name | Should -Contain 'offline-made'
        $pools[0].HostName | Should -Be $daemon.TcpUri
        @(Get-StoragePool -Connection $conn, $tcp | Where-Object Name -EQ 'offline-made').HostName | Should -Be @($conn.Uri, $tcp.Uri)
        Disconnect-LibvirtHost -InputObject $tcp
    }

    It 'authenticates with SASL over qemu+tcp: -Credential succeeds, a wrong password is refused with libvirt''s message' -Skip:([bool]$saslSkip) {
        $good = [pscredential]::new($daemon.SaslUser, (ConvertTo-SecureString $daemon.SaslPassword -AsPlainText -Force))
        $tcp = Connect-LibvirtHost -Uri $daemon.TcpUri -Credential $good -NoDefault
        try { (Get-StoragePool -Connection $tcp).Name | Should -Contain 'offline-made' } finally { Disconnect-LibvirtHost -InputObject $tcp }

        $count = @(Get-LibvirtHost).Count
        $bad = [pscredential]::new($daemon.SaslUser, (ConvertTo-SecureString 'not-the-password' -AsPlainText -Force))
        $err = $null
        try { Connect-LibvirtHost -Uri $daemon.TcpUri -Credential $bad -NoDefault } catch { $err = $_ }
        $err.FullyQualifiedErrorId | Should -BeLike 'LibvirtAuthFailed,*'
        $err.CategoryInfo.Category | Should -Be 'PermissionDenied'
        $err.Exception.Message | Should -Match 'authentication failed'   # libvirt's message
        $err.Exception.Message | Should -Match "user name '$($daemon.SaslUser)'"
        { Connect-LibvirtHost -Uri $daemon.TcpUri -NoDefault } | Should -Throw -ErrorId 'LibvirtAuthFailed,*'
        @(Get-LibvirtHost).Count | Should -Be $count
    }

    Context 'a running TCG domain' -Skip:([bool]$emulatorSkip) {
        BeforeAll {
            $pathVm = Join-Path $images 'vm'
            New-StoragePool -Name vmpool -Path $pathVm -Build
            Start-StoragePool vmpool
            $null = New-Volume -Pool vmpool -Name hot.qcow2 -Size 16MB -Format qcow2
            $null = New-Volume -Pool vmpool -Name cold.raw -Size 1MB -Format raw
            $null = New-Volume -Pool vmpool -Name hotonly.raw -Size 1MB -Format raw
            $xml = Join-Path $root 'live-vm.xml'
            Set-Content -Path $xml -Value @"
<domain type='qemu'>
  <name>kvmstorage-live</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>
"@
            Invoke-Virsh define $xml | Out-Null
            Invoke-Virsh start kvmstorage-live | Out-Null
        }

        It 'hot-plugs a disk with Add-VMDisk: live and persistent' {
            $disk = Add-VMDisk -VMName kvmstorage-live -Pool vmpool -Name hot.qcow2
            $disk.Target | Should -Be 'vda'
            (Invoke-Virsh domblklist kvmstorage-live) -join "`n" | Should -Match 'vda\s+\S*hot\.qcow2'
            (Invoke-Virsh domblklist kvmstorage-live --inactive) -join "`n" | Should -Match 'vda\s+\S*hot\.qcow2'
            $disk.Scope | Should -Be 'Both'
            (Get-VMDisk kvmstorage-live -Target vda).Scope | Should -Be 'Both'
        }

        It 'shows a disk hot-plugged with -Live only, picks a target free in both definitions, and detaches it with -Live' {
            # vdb only in the persistent definition, then a -Live disk: vdb is taken there, so the running VM gets vdc.
            Add-VMDisk -VMName kvmstorage-live -Pool vmpool -Name cold.raw -Config 3>$null | Out-Null
            $hot = Add-VMDisk -VMName kvmstorage-live -Pool vmpool -Name hotonly.raw -Live
            $hot.Target | Should -Be 'vdc'
            $hot.Scope | Should -Be 'Live'
            (Invoke-Virsh domblklist kvmstorage-live) -join "`n" | Should -Match 'vdc\s+\S*hotonly\.raw'
            (Invoke-Virsh domblklist kvmstorage-live --inactive) -join "`n" | Should -Not -Match 'hotonly'

            $disks = Get-VMDisk kvmstorage-live
            ($disks | Where-Object Target -EQ vda).Scope | Should -Be 'Both'
            ($disks | Where-Object Target -EQ vdb).Scope | Should -Be 'Persistent'
            ($disks | Where-Object Target -EQ vdc).Scope | Should -Be 'Live'
            ($disks | Where-Object Target -EQ vdc).Source | Should -BeLike '*hotonly.raw'
            (Get-Volume -Pool vmpool -Name hotonly.raw).AttachedTo | Should -Be @('kvmstorage-live')
            (Get-VMDisk kvmstorage-live | Format-Table | Out-String) | Should -Match 'Live'

            # Not in the persistent definition: -Config finds nothing there and says where it is.
            $err = $null
            Remove-VMDisk -VMName kvmstorage-live -Target vdc -Config -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            $err[0].FullyQualifiedErrorId | Should -BeLike 'DiskNotFound,*'
            $err[0].Exception.Message | Should -Match 'running VM only'
            (Invoke-Virsh domblklist kvmstorage-live) -join "`n" | Should -Match 'vdc'

            # -Live finds it; with no guest OS to acknowledge the unplug, the wait ends with an honest error.
            $err = $null
            Remove-VMDisk -VMName kvmstorage-live -Target vdc -Live -Timeout 1 -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            if ($err) {
                $err[0].FullyQualifiedErrorId | Should -BeLike 'LiveDetachPending,*'
                $err[0].Exception.Message | Should -Match "disk 'vdc'"
                $err[0].Exception.Message | Should -Not -Match 'persistent definition, so'
                (Get-VMDisk kvmstorage-live -Target vdc).Scope | Should -Be 'Live'
            }
            else {
                (Invoke-Virsh domblklist kvmstorage-live) -join "`n" | Should -Not -Match 'hotonly'
                Get-VMDisk kvmstorage-live -Target vdc -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
            }
            (Invoke-Virsh domblklist kvmstorage-live --inactive) -join "`n" | Should -Match 'vdb\s+\S*cold\.raw'
            Remove-VMDisk -VMName kvmstorage-live -Target vdb -Confirm:$false 3>$null
            (Invoke-Virsh domblklist kvmstorage-live --inactive) -join "`n" | Should -Not -Match 'cold\.raw'
        }

        It 'attaches to the persistent definition only with -Config, and picks a target free in both' {
            $disk = Add-VMDisk -VMName kvmstorage-live -Pool vmpool -Name cold.raw -Config -WarningVariable warn 3>$null
            $disk.Target | Should -Be 'vdb'
            (Invoke-Virsh domblklist kvmstorage-live) -join "`n" | Should -Not -Match 'cold\.raw'
            (Invoke-Virsh domblklist kvmstorage-live --inactive) -join "`n" | Should -Match 'vdb\s+\S*cold\.raw'
            $warn | Should -Not -BeNullOrEmpty
            Remove-VMDisk -VMName kvmstorage-live -Target vdb -Config -Confirm:$false 3>$null
            (Invoke-Virsh domblklist kvmstorage-live --inactive) -join "`n" | Should -Not -Match 'cold\.raw'
        }

        It 'reports honestly when the guest does not release a hot-unplugged disk' {
            # No guest OS runs, so nothing acknowledges the ACPI unplug: the disk stays in the running VM.
            $err = $null
            Remove-VMDisk -VMName kvmstorage-live -Target vda -Timeout 2 -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            if ($err) {
                $err[0].FullyQualifiedErrorId | Should -BeLike 'LiveDetachPending,*'
                $err[0].Exception.Message | Should -Match 'persistent definition'
                (Invoke-Virsh domblklist kvmstorage-live) -join "`n" | Should -Match 'vda'
            }
            else {
                (Invoke-Virsh domblklist kvmstorage-live) -join "`n" | Should -Not -Match 'hot\.qcow2'
            }
            (Invoke-Virsh domblklist kvmstorage-live --inactive) -join "`n" | Should -Not -Match 'hot\.qcow2'
        }

        It 'refuses -Live on a domain that is not running' {
            Invoke-Virsh destroy kvmstorage-live | Out-Null
            { Add-VMDisk -VMName kvmstorage-live -Pool vmpool -Name cold.raw -Live -ErrorAction Stop } | Should -Throw -ErrorId 'LiveChangeUnavailable,*'
            (Invoke-Virsh domblklist kvmstorage-live --inactive) -join "`n" | Should -Not -Match 'cold\.raw'
        }
    }
}

# Last: this stops the daemon.
Describe 'A daemon that stops in the middle of a pipeline' -Tag Daemon -Skip:([bool]$skipReason) {
    It 'reports the lost connection per item with libvirt''s message, and writes nothing for the items after it' {
        $null = Connect-LibvirtHost -Uri $daemon.Uri
        foreach ($name in 'mid1', 'mid2') {
            New-StoragePool -Name $name -Path (Join-Path $images $name) -Build
            Start-StoragePool $name
        }
        $err = $null
        $made = Get-StoragePool mid1, mid2 | ForEach-Object {
            if ($_.Name -eq 'mid2') { Stop-TestLibvirtd $daemon }
            $_
        } | New-Volume -Name d.qcow2 -Size 1MB -ErrorVariable err -ErrorAction SilentlyContinue
        @($made).Count | Should -Be 1
        $made.Pool | Should -Be 'mid1'
        $err | Should -HaveCount 1
        $err[0].FullyQualifiedErrorId | Should -BeLike 'LibvirtConnectionLost,*'
        $err[0].Exception.Message | Should -Match 'libvirt'
        $err[0].Exception.Message | Should -Match 'Connect-LibvirtHost'
        @(Get-ChildItem -Force (Join-Path $images 'mid2')).Count | Should -Be 0

        # The next command says the same, and the offline fallback never kicks in silently.
        { Get-StoragePool mid1 -ErrorAction Stop } | Should -Throw -ErrorId 'LibvirtConnectionLost,*'
    }
}
