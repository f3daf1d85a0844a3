#Requires -Version 7.4
# Get-StoragePool, New-StoragePool, Set-StoragePool, Remove-StoragePool against the built module and a scratch host
# root, once per backend: Offline (libvirt's files under the root) and Live (the shared libvirtd, checked with virsh).
# Tests that inspect libvirt's files on disk are Offline only. See TestHelpers.psm1.
param([ValidateSet('Offline', 'Live')] [string] $Backend = 'Offline')

BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $script:skip = Get-TestBackendSkipReason $Backend
    if ($skip) { Write-Host "StoragePool.Tests ($Backend) skipped: $skip" -ForegroundColor Yellow }
    $script:tags = @(if ($Backend -eq 'Live') { 'Daemon' })
    $script:offlineOnly = $Backend -ne 'Offline'
}

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Join-Path $PSScriptRoot 'LibvirtDaemon.psm1') -Force
    if (-not (Get-TestBackendSkipReason $Backend)) { Initialize-TestBackend $Backend }
    $script:live = $Backend -eq 'Live'
}

AfterAll { Complete-TestBackend }

Describe "New-StoragePool ($Backend)" -Tag $tags -Skip:([bool]$skip) {
    BeforeEach { $script:root = New-TestHostRoot }

    It 'defines, builds and autostarts the default dir pool as libvirt does' {
        $pool = New-StoragePool -Name default -Path (Get-HostPath /var/lib/libvirt/images) -Build -Autostart -PassThru
        $pool | Should -BeOfType ([KvmStorage.Core.Pools.StoragePool])
        $pool.Name | Should -Be 'default'
        $pool.Type | Should -BeExactly 'dir'
        $pool.Autostart | Should -BeTrue
        $pool.Path | Should -Be (Get-HostPath /var/lib/libvirt/images)
        (Get-Item (Join-Path $root 'var/lib/libvirt/images')).UnixMode | Should -Be 'drwx--x--x'
        if ($live) {
            $pool.HostName | Should -Be $env:KVMSTORAGE_TEST_LIBVIRT_URI
            (Invoke-TestVirsh pool-info default) -join "`n" | Should -Match 'Autostart:\s+yes'
            (Invoke-TestVirsh pool-dumpxml --inactive default) -join "`n" | Should -Match "<path>$([regex]::Escape($pool.Path))</path>"
        }
        else {
            $file = Join-Path $root 'etc/libvirt/storage/default.xml'
            (Get-Item $file).UnixMode | Should -Be '-rw-------'
            (Get-Item (Join-Path $root 'etc/libvirt/storage/autostart/default.xml')).LinkTarget | Should -Be '/etc/libvirt/storage/default.xml'
        }
    }

    It 'starts the pool with -Start where a daemon runs, and says why it cannot offline' {
        $pool = New-StoragePool -Name started -Path (Get-HostPath /srv/started) -Build -Start -PassThru -WarningVariable w -WarningAction SilentlyContinue
        if ($live) {
            $pool.State | Should -BeExactly 'running'
            $w | Should -BeNullOrEmpty
            (Invoke-TestVirsh pool-info started) -join "`n" | Should -Match 'State:\s+running'
        }
        else {
            $pool.State | Should -BeExactly 'inactive'
            "$w" | Should -Match 'not started: no libvirt daemon'
            Test-Path (Join-Path $root 'run/libvirt/storage/started.xml') | Should -BeFalse
        }
    }

    It 'emits nothing without -PassThru' {
        New-StoragePool -Name quiet -Path (Get-HostPath /srv/quiet) | Should -BeNullOrEmpty
        Get-StoragePool quiet | Should -Not -BeNullOrEmpty
    }

    It 'defines a <Type> pool with its source' -ForEach @(
        @{ Type = 'Netfs'; Params = @{ NetworkFileSystem = $true; SourceHost = 'nas'; SourcePath = '/export/vm'; SourceFormat = 'nfs'; Path = '/mnt/nas' }; Source = 'nas:/export/vm (nfs)' }
        @{ Type = 'Fs'; Params = @{ FileSystem = $true; SourceDevice = '/dev/sdb1'; SourceFormat = 'ext4'; Path = '/srv/fs' }; Source = '/dev/sdb1 (ext4)' }
        @{ Type = 'Logical'; Params = @{ Logical = $true; SourceName = 'vg_vms' }; Source = 'vg_vms (lvm2)' }
        @{ Type = 'Disk'; Params = @{ Disk = $true; SourceDevice = '/dev/sdc'; SourceFormat = 'gpt' }; Source = '/dev/sdc (gpt)' }
        @{ Type = 'Iscsi'; Params = @{ Iscsi = $true; SourceHost = 'san'; SourceDevice = 'iqn.2024-01.com.example:t1' }; Source = 'san iqn.2024-01.com.example:t1' }
        @{ Type = 'Rbd'; Params = @{ Rbd = $true; SourceHost = 'mon1', 'mon2'; SourceName = 'rbd'; AuthUsername = 'libvirt'; SecretUsage = 'client.libvirt' }; Source = 'mon1,mon2 rbd'; StorageBackend = 'rbd' }
        @{ Type = 'Gluster'; Params = @{ Gluster = $true; SourceHost = 'g1'; SourceName = 'gvol0' }; Source = 'g1:/ gvol0'; StorageBackend = 'gluster' }
    ) {
        # libvirt defines a pool only when the storage backend of its type is loaded.
        if ($live -and $StorageBackend) { Get-TestLibvirtdSkipReason -NeedStorageBackend $StorageBackend | Should -BeNullOrEmpty }
        $p = $Params.Clone()
        if ($p.Path) { $p.Path = Get-HostPath $p.Path }
        $pool = New-StoragePool -Name "p$Type" @p -PassThru
        $pool.Type | Should -BeExactly $Type.ToLowerInvariant()
        $pool.Source.ToString() | Should -Be $Source
        (Get-StoragePool "p$Type").Type | Should -BeExactly $Type.ToLowerInvariant()
        if ($live) { (Invoke-TestVirsh pool-dumpxml --inactive "p$Type") -join "`n" | Should -Match "<pool type='$($Type.ToLowerInvariant())'>" }
    }

    It 'validates every written definition with libvirt''s schema' -Tag Oracle -Skip:$offlineOnly {
        if (-not (Get-Command virt-xml-validate -ErrorAction SilentlyContinue)) { Set-ItResult -Skipped -Because 'virt-xml-validate is not installed'; return }
        New-StoragePool -Name a -Path (Get-HostPath /srv/a) -Build -Mode 0750 -Owner 0 -Group 0
        New-StoragePool -Name b -NetworkFileSystem -SourceHost nas -SourcePath /e -Path (Get-HostPath /mnt/b) -ProtocolVersion 4
        New-StoragePool -Name c -Iscsi -SourceHost san -SourcePort 3260 -SourceDevice iqn.2024-01.com.example:t -AuthUsername u -SecretUuid ([guid]::NewGuid())
        foreach ($f in Get-ChildItem (Join-Path $root 'etc/libvirt/storage/*.xml')) {
            $out = virt-xml-validate $f.FullName storagepool 2>&1
            $LASTEXITCODE | Should -Be 0 -Because "$out"
        }
    }

    It 'refuses <Case> and changes nothing' -ForEach @(
        @{ Case = 'a duplicate name'; Params = @{ Name = 'dup'; Path = '/srv/other' }; Id = 'PoolAlreadyExists' }
        @{ Case = 'a duplicate target path'; Params = @{ Name = 'other'; Path = '/srv/dup' }; Id = 'PoolTargetPathInUse' }
        @{ Case = 'a name with /'; Params = @{ Name = 'a/b'; Path = '/srv/x' }; Id = 'InvalidPoolName' }
        @{ Case = 'a name with ..'; Params = @{ Name = '..'; Path = '/srv/x' }; Id = 'InvalidPoolName' }
        @{ Case = 'a name with NUL'; Params = @{ Name = "a`0b"; Path = '/srv/x' }; Id = 'InvalidPoolName' }
        @{ Case = 'a name with a newline'; Params = @{ Name = "a`nb"; Path = '/srv/x' }; Id = 'InvalidPoolName' }
        @{ Case = 'an over-long name'; Params = @{ Name = ('x' * 300); Path = '/srv/x' }; Id = 'InvalidPoolName' }
        @{ Case = 'a relative target path'; Params = @{ Name = 'rel'; Path = 'srv/x' }; Id = 'InvalidTargetPath' }
        @{ Case = 'a target path with ..'; Params = @{ Name = 'dots'; Path = '/srv/../etc' }; Id = 'InvalidTargetPath' }
    ) {
        New-StoragePool -Name dup -Path (Get-HostPath /srv/dup) -Build
        $p = $Params.Clone()
        if ($p.Path -like '/*') { $p.Path = Get-HostPath $p.Path }
        $before = Get-HostSnapshot $root
        { New-StoragePool @p -Build -ErrorAction Stop } | Should -Throw -ErrorId "$Id,KvmStorage.Commands.StoragePool.NewStoragePoolCommand"
        Get-HostSnapshot $root | Should -Be $before
    }

    It 'writes a non-terminating error with the category and target' {
        New-StoragePool -Name dup -Path (Get-HostPath /srv/dup)
        New-StoragePool -Name dup -Path (Get-HostPath /srv/dup2) -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1
        $err[0].CategoryInfo.Category | Should -Be 'ResourceExists'
        $err[0].TargetObject | Should -Be 'dup'
    }

    It 'refuses an empty name at binding' {
        { New-StoragePool -Name '' -Path (Get-HostPath /srv/x) } | Should -Throw -ErrorId 'ParameterArgumentValidationError*'
    }

    It 'changes nothing with -WhatIf' {
        $before = Get-HostSnapshot $root
        New-StoragePool -Name w -Path (Get-HostPath /srv/w) -Build -Autostart -WhatIf
        Get-HostSnapshot $root | Should -Be $before
    }
}

Describe "Get-StoragePool ($Backend)" -Tag $tags -Skip:([bool]$skip) {
    BeforeAll {
        $script:root = New-TestHostRoot
        New-StoragePool -Name default -Path (Get-HostPath /var/lib/libvirt/images) -Build -Autostart
        New-StoragePool -Name backup -Path (Get-HostPath /srv/backup)
        New-StoragePool -Name nfs1 -NetworkFileSystem -SourceHost nas -SourcePath /e -Path (Get-HostPath /mnt/nfs1)
    }
    BeforeEach { $env:KVMSTORAGE_ROOT = $root }

    It 'lists every pool' {
        (Get-StoragePool).Name | Sort-Object | Should -Be @('backup', 'default', 'nfs1')
    }

    It 'filters with wildcards' {
        (Get-StoragePool -Name 'd*', 'n*').Name | Sort-Object | Should -Be @('default', 'nfs1')
        Get-StoragePool -Name 'zz*' | Should -BeNullOrEmpty
    }

    It 'reports state, space and volume count' {
        Set-Content -Path (Join-Path $root 'var/lib/libvirt/images/a.img') -Value 'x'
        if ($live) {
            # libvirt knows the space and volumes of a running pool only.
            (Get-StoragePool default).State | Should -BeExactly 'inactive'
            Invoke-TestVirsh pool-start default | Out-Null
            try {
                $p = Get-StoragePool default
                $p.State | Should -BeExactly 'running'
                $p.Capacity | Should -BeGreaterThan 0
                $p.Available | Should -BeGreaterThan 0
                $p.VolumeCount | Should -Be 1
                $p.Persistent | Should -BeTrue
                $p.Uuid | Should -Be ([guid](Invoke-TestVirsh pool-uuid default))
                (Invoke-TestVirsh vol-list default) -join "`n" | Should -Match "a\.img"
            }
            finally { Invoke-TestVirsh pool-destroy default | Out-Null; Remove-Item (Join-Path $root 'var/lib/libvirt/images/a.img') }
            return
        }
        $p = Get-StoragePool default
        $p.State | Should -BeExactly 'inactive'
        $p.Capacity | Should -BeGreaterThan 0
        $p.Available | Should -BeGreaterThan 0
        $p.VolumeCount | Should -Be 1
        $p.Persistent | Should -BeTrue
        $p.Uuid | Should -Not -Be ([guid]::Empty)
        New-Item -ItemType Directory -Force (Join-Path $root 'run/libvirt/storage') | Out-Null
        Set-Content (Join-Path $root 'run/libvirt/storage/default.xml') '<poolstate/>'
        (Get-StoragePool default).State | Should -BeExactly 'running'
        Remove-Item (Join-Path $root 'run/libvirt/storage/default.xml')
    }

    It 'reports an unknown pool as ObjectNotFound' {
        { Get-StoragePool nope -ErrorAction Stop } | Should -Throw -ErrorId 'PoolNotFound,KvmStorage.Commands.StoragePool.GetStoragePoolCommand'
    }

    It 'reports a malformed file and still lists the others' -Skip:$offlineOnly {
        $bad = Join-Path $root 'etc/libvirt/storage/broken.xml'
        Set-Content $bad '<pool type=''dir''><name>broken'
        try {
            $pools = Get-StoragePool -ErrorVariable err -ErrorAction SilentlyContinue
            $pools.Name | Sort-Object | Should -Be @('backup', 'default', 'nfs1')
            $err | Should -HaveCount 1
            $err[0].FullyQualifiedErrorId | Should -BeLike 'InvalidPoolDefinition,*'
            $err[0].TargetObject | Should -Be $bad
        }
        finally { Remove-Item $bad }
    }

    It 'reports an unreadable file' -Skip:($offlineOnly -or (& id -u) -eq '0') {
        $f = Join-Path $root 'etc/libvirt/storage/secret.xml'
        Set-Content $f '<pool type=''dir''><name>secret</name></pool>'
        chmod 000 $f
        try {
            Get-StoragePool -ErrorVariable err -ErrorAction SilentlyContinue | Out-Null
            $err[0].CategoryInfo.Category | Should -Be 'PermissionDenied'
        }
        finally { Remove-Item -Force $f }
    }

    It 'reports a definition that cannot be read (a dangling link) and still lists the others' -Skip:$offlineOnly {
        $link = Join-Path $root 'etc/libvirt/storage/gone.xml'
        New-Item -ItemType SymbolicLink -Path $link -Target (Join-Path $root 'nowhere.xml') | Out-Null
        try {
            $pools = Get-StoragePool -ErrorVariable err -ErrorAction SilentlyContinue
            $pools | Should -HaveCount 3
            $err | Should -HaveCount 1
            $err[0].FullyQualifiedErrorId | Should -BeLike 'PoolFileUnreadable,*'
            $err[0].CategoryInfo.Category | Should -Be 'ResourceUnavailable'
        }
        finally { Remove-Item $link }
    }

    It 'shows a table with human-readable sizes' {
        $text = Get-StoragePool default | Format-Table | Out-String
        $text | Should -Match 'GiB'
        $text | Should -Match 'default'
    }

    It 'completes pool names' {
        $result = TabExpansion2 -inputScript 'Get-StoragePool -Name de' -cursorColumn 'Get-StoragePool -Name de'.Length
        $result.CompletionMatches.CompletionText | Should -Contain 'default'
    }

    It 'binds pool objects and names from the pipeline' {
        ('default', 'backup' | Get-StoragePool).Name | Should -Be @('default', 'backup')
        (Get-StoragePool default | Get-StoragePool).Name | Should -Be 'default'
    }
}

Describe "Set-StoragePool ($Backend)" -Tag $tags -Skip:([bool]$skip) {
    BeforeEach {
        $script:root = New-TestHostRoot
        New-StoragePool -Name p -Path (Get-HostPath /srv/p) -Build
    }

    It 'turns autostart on and off' {
        Set-StoragePool -Name p -Autostart $true
        (Get-StoragePool p).Autostart | Should -BeTrue
        Get-StoragePool p | Set-StoragePool -Autostart $false
        (Get-StoragePool p).Autostart | Should -BeFalse
    }

    It 'changes permissions in the definition and on the folder, keeping the UUID' {
        $uuid = (Get-StoragePool p).Uuid
        $p = Set-StoragePool -Name p -Mode 0755 -Owner 0 -Group 0 -PassThru
        $p.Uuid | Should -Be $uuid
        $p.Permissions.Mode | Should -Be ([System.IO.UnixFileMode]493)
        (Get-Item (Join-Path $root 'srv/p')).UnixMode | Should -Be 'drwxr-xr-x'
        $xml = if ($live) { (Invoke-TestVirsh pool-dumpxml --inactive p) -join "`n" } else { Get-Content -Raw (Join-Path $root 'etc/libvirt/storage/p.xml') }
        $xml | Should -Match '<mode>0755</mode>'
        if ($live) { $xml | Should -Match "<uuid>$uuid</uuid>" }
    }

    It 'changes nothing with -WhatIf' {
        $before = Get-HostSnapshot $root
        Set-StoragePool -Name p -Autostart $true -Mode 0700 -WhatIf
        Get-HostSnapshot $root | Should -Be $before
    }

    It 'refuses an unknown pool' {
        { Set-StoragePool -Name nope -Autostart $true -ErrorAction Stop } | Should -Throw -ErrorId 'PoolNotFound,*'
    }

    It 'refuses a malformed mode at binding' {
        { Set-StoragePool -Name p -Mode 999 } | Should -Throw -ErrorId 'ParameterArgumentValidationError*'
    }

    It 'refuses permissions on a pool type without a target' {
        if ($live) { Get-TestLibvirtdSkipReason -NeedStorageBackend gluster | Should -BeNullOrEmpty -Because 'libvirt defines a gluster pool only with its backend' }
        New-StoragePool -Name g -Gluster -SourceHost g1 -SourceName v
        $before = Get-HostSnapshot $root
        { Set-StoragePool -Name g -Mode 0700 -ErrorAction Stop } | Should -Throw -ErrorId 'InvalidPermissions,*'
        Get-HostSnapshot $root | Should -Be $before
    }
}

Describe "Remove-StoragePool ($Backend)" -Tag $tags -Skip:([bool]$skip) {
    BeforeEach {
        $script:root = New-TestHostRoot
        New-StoragePool -Name p -Path (Get-HostPath /srv/p) -Build -Autostart
    }

    It 'undefines the pool and keeps the folder and volumes' {
        Set-Content (Join-Path $root 'srv/p/vol.img') 'data'
        Remove-StoragePool -Name p -Confirm:$false
        Get-StoragePool p -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Test-Path (Join-Path $root 'srv/p/vol.img') | Should -BeTrue
        if ($live) { (Invoke-TestVirsh pool-list --all --name) | Should -Not -Contain 'p' }
        else { Test-Path (Join-Path $root 'etc/libvirt/storage/autostart/p.xml') | Should -BeFalse }
    }

    It 'deletes an empty folder with -DeleteTargetDirectory' {
        Get-StoragePool p | Remove-StoragePool -DeleteTargetDirectory -Confirm:$false
        Test-Path (Join-Path $root 'srv/p') | Should -BeFalse
        if ($live) { (Invoke-TestVirsh pool-list --all --name) | Should -Not -Contain 'p' }
    }

    It 'refuses to delete a folder holding volumes and changes nothing' {
        Set-Content (Join-Path $root 'srv/p/vol.img') 'data'
        $before = Get-HostSnapshot $root
        { Remove-StoragePool -Name p -DeleteTargetDirectory -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'PoolTargetNotEmpty,*'
        Get-HostSnapshot $root | Should -Be $before
    }

    It 'changes nothing with -WhatIf' {
        $before = Get-HostSnapshot $root
        Remove-StoragePool -Name p -DeleteTargetDirectory -WhatIf
        Get-HostSnapshot $root | Should -Be $before
    }

    It 'refuses an unknown pool and goes on with the next' {
        New-StoragePool -Name q -Path (Get-HostPath /srv/q)
        Remove-StoragePool -Name nope, q -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1
        $err[0].FullyQualifiedErrorId | Should -BeLike 'PoolNotFound,*'
        Get-StoragePool q -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }

    It 'has ConfirmImpact High' {
        (Get-Command Remove-StoragePool).ImplementingType.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false)[0].ConfirmImpact | Should -Be 'High'
    }
}
