#Requires -Version 7.4
# Connect-LibvirtHost, Get-LibvirtHost, Disconnect-LibvirtHost, -Connection, and Start/Stop/Update-StoragePool, against
# libvirt's in-process test driver (no daemon: state lives per connection) and the offline backend.

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $script:hasLibvirt = [KvmStorage.Core.Libvirt.LibvirtLibrary]::IsAvailable
    $script:fixture = 'test://' + (Resolve-Path (Join-Path $PSScriptRoot '../KvmStorage.Core.Tests/Fixtures/Libvirt/node.xml')).Path
}

AfterAll {
    Get-LibvirtHost | Disconnect-LibvirtHost
}

Describe 'Connect-LibvirtHost' {
    BeforeEach {
        if (-not $hasLibvirt) { Set-ItResult -Skipped -Because 'libvirt.so.0 is not installed (package libvirt0)' }
        $script:root = New-TestHostRoot
    }
    AfterEach { Get-LibvirtHost | Disconnect-LibvirtHost }

    It 'opens a connection, emits it and makes it the default' {
        $c = Connect-LibvirtHost -Uri test:///default
        $c | Should -BeOfType ([KvmStorage.Core.Hosting.KvmConnection])
        $c.Uri | Should -Be 'test:///default'
        $c.Hostname | Should -Not -BeNullOrEmpty
        $c.LibvirtVersion | Should -BeGreaterThan ([version]'1.0')
        $c.ReadOnly | Should -BeFalse
        (Get-LibvirtHost -Default).Uri | Should -Be 'test:///default'
        # The default connection now serves every cmdlet: the test node's pool, not the empty offline root.
        (Get-StoragePool).Name | Should -Contain 'default-pool'
        (Get-StoragePool default-pool).HostName | Should -Be 'test:///default'
    }

    It 'opens a read-only connection that refuses writes with libvirt''s message' {
        $ro = Connect-LibvirtHost -Uri test:///default -ReadOnly -NoDefault
        $ro.ReadOnly | Should -BeTrue
        (Get-StoragePool -Connection $ro).Name | Should -Contain 'default-pool'
        { Stop-StoragePool -Connection $ro -Name default-pool -ErrorAction Stop } | Should -Throw -ErrorId 'LibvirtOperationDenied,*'
        $err = $null
        Stop-StoragePool -Connection $ro -Name default-pool -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].Exception.Message | Should -Match 'read only'
        (Get-StoragePool -Connection $ro default-pool).State | Should -BeExactly 'running'
    }

    It 'reports an unreachable URI as LibvirtConnectFailed' {
        { Connect-LibvirtHost -Uri 'qemu:///system?socket=/nonexistent/kvmstorage/libvirt-sock' } | Should -Throw -ErrorId 'LibvirtConnectFailed,*'
        Get-LibvirtHost | Should -BeNullOrEmpty
    }

    It 'explains a -Connection left empty by a failed Connect-LibvirtHost' {
        $c = $null
        try { $c = Connect-LibvirtHost -Uri 'qemu:///system?socket=/nonexistent/kvmstorage/libvirt-sock' } catch { }
        $c | Should -BeNullOrEmpty
        try { Get-StoragePool -Connection $c -ErrorAction Stop; $e = $null } catch { $e = $_ }
        "$e" | Should -Match 'holds no connection.*Connect-LibvirtHost'
    }

    It 'keeps offline the default when no connection was opened and the root is a sandbox' {
        New-StoragePool -Name offline -Path /srv/offline
        (Get-StoragePool offline).HostName | Should -Be "offline:$root"
    }
}

Describe '-Connection' {
    BeforeEach {
        if (-not $hasLibvirt) { Set-ItResult -Skipped -Because 'libvirt.so.0 is not installed (package libvirt0)' }
        $script:root = New-TestHostRoot
    }
    AfterEach { Get-LibvirtHost | Disconnect-LibvirtHost }

    It 'lists the pools of several hosts, each with its HostName' {
        $a = Connect-LibvirtHost -Uri test:///default -NoDefault
        $b = Connect-LibvirtHost -Uri $fixture -NoDefault
        $pools = @(Get-StoragePool -Connection $a, $b)
        ($pools | Where-Object Name -EQ 'default-pool').HostName | Should -Be 'test:///default'
        ($pools | Where-Object Name -EQ 'fixture-pool').HostName | Should -Be $b.Uri
    }

    It 'refuses several connections where a command works on one host' {
        $a = Connect-LibvirtHost -Uri test:///default -NoDefault
        $b = Connect-LibvirtHost -Uri $fixture -NoDefault
        { Start-StoragePool -Connection $a, $b -Name default-pool } | Should -Throw -ErrorId 'MultipleConnectionsNotSupported,*'
    }

    It 'refuses a closed connection' {
        $a = Connect-LibvirtHost -Uri test:///default -NoDefault
        Disconnect-LibvirtHost -InputObject $a
        $a.IsOpen | Should -BeFalse
        { Get-StoragePool -Connection $a } | Should -Throw -ErrorId 'ConnectionClosed,*'
    }

    It 'lists volumes and VM disks through a connection' {
        $b = Connect-LibvirtHost -Uri $fixture -NoDefault
        (Get-Volume -Connection $b -Pool fixture-pool).Name | Should -Be @('data.raw', 'system.qcow2')
        (Get-VMDisk -Connection $b -VMName fixture-vm).Target | Should -Be 'vda'
    }
}

Describe 'Get-LibvirtHost and Disconnect-LibvirtHost' {
    BeforeEach { if (-not $hasLibvirt) { Set-ItResult -Skipped -Because 'libvirt.so.0 is not installed (package libvirt0)' } }

    It 'lists open connections by URI and closes them' {
        $null = Connect-LibvirtHost -Uri test:///default
        $null = Connect-LibvirtHost -Uri $fixture -NoDefault
        @(Get-LibvirtHost).Count | Should -Be 2
        @(Get-LibvirtHost -Uri 'test:///def*').Count | Should -Be 1
        Disconnect-LibvirtHost -Uri 'test:///default'
        (Get-LibvirtHost).Uri | Should -Be $fixture
        Disconnect-LibvirtHost -Uri $fixture
        Get-LibvirtHost | Should -BeNullOrEmpty
    }

    It 'reports an unknown URI' {
        { Disconnect-LibvirtHost -Uri 'qemu+ssh://nowhere/system' -ErrorAction Stop } | Should -Throw -ErrorId 'ConnectionNotFound,*'
    }
}

Describe 'Start-StoragePool, Stop-StoragePool, Update-StoragePool' {
    Context 'through libvirt' {
        BeforeEach {
            if (-not $hasLibvirt) { Set-ItResult -Skipped -Because 'libvirt.so.0 is not installed (package libvirt0)' }
            $script:root = New-TestHostRoot
            $script:c = Connect-LibvirtHost -Uri test:///default
        }
        AfterEach { Get-LibvirtHost | Disconnect-LibvirtHost }

        It 'stops, starts and refreshes a pool' {
            (Stop-StoragePool default-pool -PassThru).State | Should -BeExactly 'inactive'
            (Get-StoragePool default-pool).State | Should -BeExactly 'inactive'
            (Get-StoragePool default-pool | Start-StoragePool -PassThru).State | Should -BeExactly 'running'
            (Update-StoragePool default-pool -PassThru).State | Should -BeExactly 'running'
            Update-StoragePool default-pool | Should -BeNullOrEmpty
        }

        It 'changes nothing with -WhatIf' {
            Stop-StoragePool default-pool -WhatIf
            (Get-StoragePool default-pool).State | Should -BeExactly 'running'
        }

        It 'reports a pool that does not exist as PoolNotFound, per item' {
            $err = $null
            $out = Stop-StoragePool -Name missing, default-pool -PassThru -ErrorVariable err -ErrorAction SilentlyContinue
            $err[0].FullyQualifiedErrorId | Should -BeLike 'PoolNotFound,*'
            $err[0].Exception.Message | Should -Match 'missing'
            $out.Name | Should -Be 'default-pool'
        }

        It 'reports XML libvirt rejects with libvirt''s message and defines nothing' {
            # gpt is a valid -SourceFormat, but not for an fs pool: libvirt's schema check (DEFINE_VALIDATE) refuses it.
            { New-StoragePool -Name bad -FileSystem -SourceDevice /dev/sdz1 -SourceFormat gpt -Path /srv/bad -ErrorAction Stop } | Should -Throw -ErrorId 'LibvirtError92,*'
            $err = $null
            New-StoragePool -Name bad -FileSystem -SourceDevice /dev/sdz1 -SourceFormat gpt -Path /srv/bad -ErrorVariable err -ErrorAction SilentlyContinue
            $err[0].Exception.Message | Should -Match 'failed to validate against schema'
            (Get-StoragePool).Name | Should -Not -Contain 'bad'
        }

        It 'attaches a disk the test driver cannot hot-plug with its NotSupported error' {
            $null = Connect-LibvirtHost -Uri $fixture
            { Add-VMDisk -VMName fixture-vm -Pool fixture-pool -Name data.raw -ErrorAction Stop } | Should -Throw -ErrorId 'LibvirtError3,*'
            (Get-VMDisk -VMName fixture-vm).Target | Should -Be 'vda'
        }
    }

    Context 'offline' {
        BeforeEach { $script:root = New-TestHostRoot; New-StoragePool -Name p -Path /srv/p -Build }

        It '<Command> needs a daemon and changes nothing' -ForEach @(
            @{ Command = 'Start-StoragePool' }
            @{ Command = 'Stop-StoragePool' }
        ) {
            $before = Get-TreeSnapshot $root
            { & $Command -Name p -ErrorAction Stop } | Should -Throw -ErrorId 'LibvirtDaemonRequired,*'
            Get-TreeSnapshot $root | Should -Be $before
        }

        It 'Update-StoragePool re-reads the files' {
            (Update-StoragePool p -PassThru).Name | Should -Be 'p'
        }
    }
}
