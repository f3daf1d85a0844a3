#Requires -Version 7.4
# Get-VMDisk, Add-VMDisk, Set-VMDisk, Remove-VMDisk against the built module, a scratch host root and
# domain definitions as libvirt writes them (examples/kvm1.xml was written by libvirtd 9.0), once per backend:
# Offline (the files under the root) and Live (the domains defined in the shared libvirtd, which virsh reads back).
# See TestHelpers.psm1; disks of running domains are tested in LiveHost.Daemon.Tests.ps1.
param([ValidateSet('Offline', 'Live')] [string] $Backend = 'Offline')

BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $script:skip = Get-TestBackendSkipReason $Backend
    if ($skip) { Write-Host "VMDisk.Tests ($Backend) skipped: $skip" -ForegroundColor Yellow }
    $script:tags = @(if ($Backend -eq 'Live') { 'Daemon' })
    $script:offlineOnly = $Backend -ne 'Offline'
}

AfterAll { Complete-TestBackend }

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    if (-not (Get-TestBackendSkipReason $Backend)) { Initialize-TestBackend $Backend }
    $script:live = $Backend -eq 'Live'
    $script:kvm1Xml = Join-Path $PSScriptRoot '../../examples/kvm1.xml'
    $script:hasValidator = [bool](Get-Command virt-xml-validate -ErrorAction SilentlyContinue)

    function New-VMRoot {
        $root = New-TestHostRoot
        New-StoragePool -Name default -Path (Get-HostPath /var/lib/libvirt/images) -Build
        $qemu = Join-Path $root 'etc/libvirt/qemu'
        New-Item -ItemType Directory -Force $qemu | Out-Null
        foreach ($vm in 'kvm1', 'kvm2') {
            $text = (Get-Content -Raw $kvm1Xml) -replace 'kvm1', $vm -replace '<uuid>[^<]+</uuid>', "<uuid>$([guid]::NewGuid())</uuid>"
            [IO.File]::WriteAllText((Join-Path $qemu "$vm.xml"), $text)
        }
        if ($live) {
            # Live, the daemon holds the definitions: define them there (and the pool must run to list volumes).
            Start-StoragePool default
            Add-TestLibvirtDomain "$qemu/kvm1.xml", "$qemu/kvm2.xml"
            Remove-Item -Recurse $qemu
        }
        $root
    }

    # The persistent definition: the file offline, libvirt's (virsh dumpxml --inactive) live.
    function Get-DomainText([string] $Root, [string] $Vm = 'kvm1') {
        if ($live) { return (Invoke-TestVirsh dumpxml --inactive $Vm) -join "`n" }
        Get-Content -Raw (Join-Path $Root "etc/libvirt/qemu/$Vm.xml")
    }

    function Assert-DomainValid([string] $Root) {
        # Live, libvirt validated the XML itself (the module defines with VIR_DOMAIN_DEFINE_VALIDATE).
        if (-not $hasValidator -or $live) { return }
        foreach ($f in Get-ChildItem (Join-Path $Root 'etc/libvirt/qemu/*.xml')) {
            $out = virt-xml-validate $f.FullName domain 2>&1
            $LASTEXITCODE | Should -Be 0 -Because "$out"
        }
    }
}

Describe "Add-VMDisk ($Backend)" -Tag $tags -Skip:([bool]$skip) {
    BeforeEach { $script:root = New-VMRoot }

    It 'attaches a new volume from the pipeline as the next free virtio disk' {
        $disk = Get-StoragePool default | New-Volume -Name kvm1-data.qcow2 -Size 8GB | Add-VMDisk -VMName kvm1
        $disk | Should -BeOfType ([KvmStorage.Core.Domains.VMDisk])
        $disk.Target | Should -Be 'vda'
        $disk.Bus | Should -Be 'virtio'
        $disk.Format | Should -Be 'qcow2'
        $disk.Source | Should -Be (Get-HostPath '/var/lib/libvirt/images/kvm1-data.qcow2')
        $text = Get-DomainText $root
        $text | Should -Match "<driver name='qemu' type='qcow2'/>\s+<source file='$([regex]::Escape($disk.Source))'/>\s+<target dev='vda' bus='virtio'/>"
        if ($live) { (Invoke-TestVirsh domblklist kvm1 --inactive) -join "`n" | Should -Match "vda\s+$([regex]::Escape($disk.Source))" }
        else { (Get-Item (Join-Path $root 'etc/libvirt/qemu/kvm1.xml')).UnixMode | Should -Be '-rw-------' }
        Assert-DomainValid $root
    }

    It 'changes only the intended lines of a libvirt-written domain' {
        $before = (Get-DomainText $root) -split "`n"
        New-Volume default d.img -Size 1GB -Format raw | Add-VMDisk -VMName kvm1 | Out-Null
        $after = (Get-DomainText $root) -split "`n"
        $added = Compare-Object $before $after | Where-Object SideIndicator -EQ '=>' | ForEach-Object { $_.InputObject.Trim() }
        $removed = Compare-Object $before $after | Where-Object SideIndicator -EQ '<='
        $removed | Should -BeNullOrEmpty
        # Live, libvirt also gives the new disk its PCI address.
        $added = $added | Where-Object { -not ($live -and $_ -like '<address *') }
        $added | Should -Be @("<disk type='file' device='disk'>", "<driver name='qemu' type='raw'/>", "<source file='$(Get-HostPath /var/lib/libvirt/images/d.img)'/>", "<target dev='vda' bus='virtio'/>", '</disk>')
    }

    It 'picks vdb, then sdb on sata (sda is the cdrom), and honours a given target' {
        New-Volume default a.img 1GB -Format raw | Add-VMDisk -VMName kvm1 | Out-Null
        (New-Volume default b.img 1GB -Format raw | Add-VMDisk -VMName kvm1).Target | Should -Be 'vdb'
        (New-Volume default c.img 1GB -Format raw | Add-VMDisk -VMName kvm1 -Bus sata).Target | Should -Be 'sdb'
        (New-Volume default d.img 1GB -Format raw | Add-VMDisk -VMName kvm1 -Target vdz).Target | Should -Be 'vdz'
        Assert-DomainValid $root
    }

    It 'adds a virtio-scsi controller for the first SCSI disk' {
        (New-Volume default s.img 1GB -Format raw | Add-VMDisk -VMName kvm1 -Bus scsi).Target | Should -Be 'sdb'
        Get-DomainText $root | Should -Match "<controller type='scsi' index='0' model='virtio-scsi'/?>"
        Assert-DomainValid $root
    }

    It 'attaches by -Pool/-Name and by -Path, with driver options, as a volume source' {
        New-Volume default p.qcow2 1GB | Out-Null
        $d = Add-VMDisk -VMName kvm1 -Pool default -Name p.qcow2 -Cache none -Io native -Discard unmap -Serial DATA01 -AsVolumeSource
        $d.Pool | Should -Be 'default'
        $d.VolumeName | Should -Be 'p.qcow2'
        $d.Cache | Should -Be 'none'
        Get-DomainText $root | Should -Match "<source pool='default' volume='p.qcow2'/>"
        New-Volume default q.img 1GB -Format raw | Out-Null
        (Add-VMDisk -VMName kvm2 -Path (Join-Path $root 'var/lib/libvirt/images/q.img')).Source | Should -Be (Get-HostPath '/var/lib/libvirt/images/q.img')
        Assert-DomainValid $root
    }

    It 'adds a cdrom with an ISO, read-only on sata' {
        $iso = Join-Path $root 'var/lib/libvirt/images/ubuntu.iso'
        [IO.File]::WriteAllBytes($iso, [byte[]]::new(1MB))
        $cd = Add-VMDisk -VMName kvm1 -Device cdrom -Path $iso
        $cd.Device | Should -Be 'cdrom'
        $cd.ReadOnly | Should -BeTrue
        $cd.Bus | Should -Be 'sata'
        $cd.Target | Should -Be 'sdb'
        (Add-VMDisk -VMName kvm2 -Device cdrom -NoMedia).IsEmpty | Should -BeTrue
        Assert-DomainValid $root
    }

    It 'refuses <Case> and changes nothing' -ForEach @(
        @{ Case = 'an unknown VM'; Params = @{ VMName = 'nope'; Path = 'IMG' }; Id = 'VMNotFound' }
        @{ Case = 'a missing image'; Params = @{ VMName = 'kvm1'; Path = '/nonexistent.img' }; Id = 'ImageNotFound' }
        @{ Case = 'a taken target'; Params = @{ VMName = 'kvm1'; Path = 'IMG'; Target = 'sda'; Bus = 'sata' }; Id = 'DiskTargetAlreadyExists' }
        @{ Case = 'a shareable read-write qcow2'; Params = @{ VMName = 'kvm1'; Path = 'QCOW'; Shareable = $true }; Id = 'ShareableNeedsRawFormat' }
        @{ Case = 'io native with writeback cache'; Params = @{ VMName = 'kvm1'; Path = 'IMG'; Io = 'native'; Cache = 'writeback' }; Id = 'NativeIoNeedsDirectCache' }
        @{ Case = 'a boot order beside <os><boot dev>'; Params = @{ VMName = 'kvm1'; Path = 'IMG'; BootOrder = 1 }; Id = 'BootOrderWithOsBoot' }
        @{ Case = 'a cdrom on virtio'; Params = @{ VMName = 'kvm1'; Path = 'IMG'; Device = 'cdrom'; Bus = 'virtio' }; Id = 'InvalidBusForDiskDevice' }
        @{ Case = 'a target with a partition number'; Params = @{ VMName = 'kvm1'; Path = 'IMG'; Target = 'vdb1' }; Id = 'ParameterArgumentValidationError' }
        @{ Case = 'an image attached twice to one VM'; Params = @{ VMName = 'kvm1'; Path = 'ATTACHED' }; Id = 'ImageAlreadyAttached' }
        @{ Case = 'an image attached read-write to another VM'; Params = @{ VMName = 'kvm2'; Path = 'ATTACHED' }; Id = 'ImageAttachedToAnotherVM' }
        @{ Case = 'a vhdx, which libvirt does not accept'; Params = @{ VMName = 'kvm1'; Path = 'VHDX' }; Id = 'InvalidDiskFormat' }
    ) {
        $images = Join-Path $root 'var/lib/libvirt/images'
        New-Volume default img.img 1GB -Format raw | Out-Null
        New-Volume default q.qcow2 1GB | Out-Null
        New-Volume default att.img 1GB -Format raw | Add-VMDisk -VMName kvm1 | Out-Null
        $vhdx = Join-Path $images 'v.vhdx'
        if ($Case -like '*vhdx*') {
            if (-not (Get-Command qemu-img -ErrorAction SilentlyContinue)) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
            qemu-img create -q -f vhdx $vhdx 64M
        }
        $p = @{}
        foreach ($k in $Params.Keys) { $p[$k] = $Params[$k] }
        $p['Path'] = switch ($p['Path']) { 'IMG' { Join-Path $images 'img.img' } 'QCOW' { Join-Path $images 'q.qcow2' } 'ATTACHED' { Join-Path $images 'att.img' } 'VHDX' { $vhdx } default { $_ } }
        $before = Get-HostSnapshot $root
        { Add-VMDisk @p -ErrorAction Stop } | Should -Throw -ErrorId "$Id,*"
        Get-HostSnapshot $root | Should -Be $before
    }

    It 'refuses more than four IDE disks' {
        1..4 | ForEach-Object { New-Volume default "i$_.img" 1MB -Format raw | Add-VMDisk -VMName kvm2 -Bus ide | Out-Null }
        $before = Get-HostSnapshot $root
        { New-Volume default i5.img 1MB -Format raw | Add-VMDisk -VMName kvm2 -Bus ide -ErrorAction Stop } | Should -Throw -ErrorId 'IdeUnitsExhausted,*'
        (Get-VMDisk kvm2 -Target 'hd*').Count | Should -Be 4
    }

    It 'allows a second attachment with -Force, and read-only sharing' {
        $v = New-Volume default s.img 1GB -Format raw
        $v | Add-VMDisk -VMName kvm1 -ReadOnly | Out-Null
        ($v | Add-VMDisk -VMName kvm2 -ReadOnly).ReadOnly | Should -BeTrue
        ($v | Add-VMDisk -VMName kvm1 -Force).Target | Should -Be 'vdb'
    }

    It 'rejects a malformed domain file with a clear error' -Skip:$offlineOnly {
        Set-Content (Join-Path $root 'etc/libvirt/qemu/broken.xml') '<domain type=''kvm''><name>broken'
        $before = Get-HostSnapshot $root
        { New-Volume default x.img 1MB -Format raw | Add-VMDisk -VMName broken -ErrorAction Stop } | Should -Throw -ErrorId 'DomainFileMalformed,*'
    }

    It 'warns that a running VM sees the change only after a restart' -Skip:$offlineOnly {
        New-Item -ItemType Directory -Force (Join-Path $root 'run/libvirt/qemu') | Out-Null
        Set-Content (Join-Path $root 'run/libvirt/qemu/kvm1.xml') "<domstatus state='running' reason='booted' pid='1'><domain type='qemu'><name>kvm1</name></domain></domstatus>"
        New-Volume default r.img 1MB -Format raw | Add-VMDisk -VMName kvm1 -WarningVariable w -WarningAction SilentlyContinue | Out-Null
        $w | Should -HaveCount 1
        "$w" | Should -Match 'running'
    }

    It 'changes nothing with -WhatIf' {
        New-Volume default w.img 1GB -Format raw | Out-Null
        $before = Get-HostSnapshot $root
        Get-Volume default w.img | Add-VMDisk -VMName kvm1 -WhatIf
        Get-HostSnapshot $root | Should -Be $before
    }
}

Describe "Get-VMDisk ($Backend)" -Tag $tags -Skip:([bool]$skip) {
    BeforeAll {
        $script:root = New-VMRoot
        New-Volume default base.qcow2 1GB | Out-Null
        New-Volume default overlay.qcow2 -BackingVolume (Get-Volume default base.qcow2) | Add-VMDisk -VMName kvm1 | Out-Null
        New-Volume default data.img 1GB -Format raw | Add-VMDisk -VMName kvm2 -Bus scsi | Out-Null
    }
    BeforeEach { $env:KVMSTORAGE_ROOT = $root }

    It 'completes the targets of the VM given by -VMName' {
        foreach ($cmd in 'Get-VMDisk', 'Set-VMDisk', 'Remove-VMDisk') {
            $line = "$cmd -VMName kvm1 -Target "
            @((TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText | Sort-Object) | Should -Be @('sda', 'vda') -Because $cmd
        }
        $line = 'Get-VMDisk -VMName kvm2 -Target s'
        @((TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText | Sort-Object) | Should -Be @((Get-VMDisk kvm2).Target | Where-Object { $_ -like 's*' } | Sort-Object)
    }

    It 'reports a literal target no VM has (DiskNotFound), and lets a pattern match nothing' {
        { Get-VMDisk kvm1 -Target vdz -ErrorAction Stop } | Should -Throw -ErrorId 'DiskNotFound,*'
        Get-VMDisk kvm1 -Target vdz -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        "$($e[0])" | Should -BeLike "*kvm1*vdz*"
        Get-VMDisk kvm1 -Target 'vdz*' -ErrorAction Stop | Should -BeNullOrEmpty
        # Across VMs, a target is missing only when no VM has it: kvm2 has sda, kvm1's sda is an empty drive.
        @(Get-VMDisk -Target sda -ErrorAction Stop).Count | Should -BeGreaterThan 0
        @(Get-VMDisk kvm1, kvm2 -Target vda -ErrorAction Stop).Count | Should -Be 1
    }

    It 'lists the disks of every VM with their volumes, including empty drives' {
        $all = Get-VMDisk
        ($all | Where-Object VMName -EQ kvm1).Target | Sort-Object | Should -Be @('sda', 'vda')
        $empty = $all | Where-Object { $_.VMName -eq 'kvm1' -and $_.Target -eq 'sda' }
        $empty.IsEmpty | Should -BeTrue
        $vda = $all | Where-Object Target -EQ vda
        $vda.Volume.Name | Should -Be 'overlay.qcow2'
        $vda.Pool | Should -Be 'default'
    }

    It 'filters by VM and target with wildcards' {
        (Get-VMDisk -VMName 'kvm*' -Target 'sd*').Count | Should -Be 3
        (Get-VMDisk kvm2 -Target sdb).Bus | Should -Be 'scsi'
    }

    It 'reports an unknown VM' {
        { Get-VMDisk -VMName nope -ErrorAction Stop } | Should -Throw -ErrorId 'VMNotFound,*'
    }

    It 'shows AttachedTo on volumes, through backing files of attached overlays' {
        (Get-Volume default overlay.qcow2).AttachedTo | Should -Be @('kvm1')
        (Get-Volume default base.qcow2).AttachedTo | Should -Be @('kvm1')
        (Get-Volume default data.img).AttachedTo | Should -Be @('kvm2')
    }

    It 'makes Remove-Volume refuse an attached volume unless forced' {
        $before = Get-HostSnapshot $root
        { Remove-Volume default data.img -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'VolumeAttachedToVM,*'
        Get-HostSnapshot $root | Should -Be $before
    }

    It 'shows a table grouped by VM' {
        $text = Get-VMDisk | Format-Table | Out-String
        $text | Should -Match 'VMName: kvm1'
        $text | Should -Match '\(empty\)'
    }

    It 'completes VM names' {
        $line = 'Get-VMDisk -VMName kv'
        (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText | Should -Contain 'kvm2'
    }
}

Describe "Set-VMDisk ($Backend)" -Tag $tags -Skip:([bool]$skip) {
    BeforeEach {
        $script:root = New-VMRoot
        New-Volume default d.img 1GB -Format raw | Add-VMDisk -VMName kvm1 | Out-Null
    }

    It 'changes cache, discard, serial and read-only' {
        $d = Set-VMDisk -VMName kvm1 -Target vda -Cache none -Discard unmap -Serial S1 -ReadOnly $true -PassThru
        $d.Cache | Should -Be 'none'
        $d.Discard | Should -Be 'unmap'
        $d.Serial | Should -Be 'S1'
        $d.ReadOnly | Should -BeTrue
        Assert-DomainValid $root
    }

    It 'takes disks from Get-VMDisk' {
        Get-VMDisk kvm1 -Target vda | Set-VMDisk -Cache writethrough
        (Get-VMDisk kvm1 -Target vda).Cache | Should -Be 'writethrough'
    }

    It 'changes and ejects cdrom media' {
        $iso1 = Join-Path $root 'var/lib/libvirt/images/a.iso'; [IO.File]::WriteAllBytes($iso1, [byte[]]::new(1MB))
        $iso2 = Join-Path $root 'var/lib/libvirt/images/b.iso'; [IO.File]::WriteAllBytes($iso2, [byte[]]::new(1MB))
        (Set-VMDisk -VMName kvm1 -Target sda -Path $iso1 -PassThru).Source | Should -Be (Get-HostPath '/var/lib/libvirt/images/a.iso')
        (Set-VMDisk -VMName kvm1 -Target sda -Path $iso2 -PassThru).Source | Should -Be (Get-HostPath '/var/lib/libvirt/images/b.iso')
        (Set-VMDisk -VMName kvm1 -Target sda -Eject -PassThru).IsEmpty | Should -BeTrue
        Assert-DomainValid $root
    }

    It 'refuses <Case> and changes nothing' -ForEach @(
        @{ Case = 'io native with writeback'; Params = @{ Target = 'vda'; Io = 'native'; Cache = 'writeback' }; Id = 'NativeIoNeedsDirectCache' }
        @{ Case = 'an unknown disk'; Params = @{ Target = 'vdq'; Cache = 'none' }; Id = 'DiskNotFound' }
        @{ Case = 'media on a hard disk'; Params = @{ Target = 'vda'; Path = '/var/lib/libvirt/images/d.img' }; Id = 'NotRemovableMedia' }
        @{ Case = 'a boot order beside <os><boot dev>'; Params = @{ Target = 'vda'; BootOrder = 1 }; Id = 'BootOrderWithOsBoot' }
        @{ Case = 'a writable cdrom'; Params = @{ Target = 'sda'; ReadOnly = $false }; Id = 'ReadOnlyMedia' }
    ) {
        $p = $Params.Clone()
        if ($p.Path) { $p.Path = Get-HostPath $p.Path }
        $before = Get-HostSnapshot $root
        { Set-VMDisk -VMName kvm1 @p -ErrorAction Stop } | Should -Throw -ErrorId "$Id,*"
        Get-HostSnapshot $root | Should -Be $before
    }

    It 'changes nothing with -WhatIf' {
        $before = Get-HostSnapshot $root
        Set-VMDisk -VMName kvm1 -Target vda -Cache none -WhatIf
        Get-HostSnapshot $root | Should -Be $before
    }
}

Describe "Remove-VMDisk ($Backend)" -Tag $tags -Skip:([bool]$skip) {
    BeforeEach {
        $script:root = New-VMRoot
        $script:v = New-Volume default d.img 1GB -Format raw
        $v | Add-VMDisk -VMName kvm1 | Out-Null
    }

    It 'detaches by target and keeps the image' {
        Remove-VMDisk -VMName kvm1 -Target vda -Confirm:$false
        Get-VMDisk kvm1 -Target vda -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Test-Path $v.LocalPath | Should -BeTrue
        Assert-DomainValid $root
    }

    It 'detaches by volume and deletes the image with -DeleteVolume' {
        Get-Volume default d.img | Remove-VMDisk -VMName kvm1 -DeleteVolume -Confirm:$false
        Get-VMDisk kvm1 -Target vda -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Test-Path $v.LocalPath | Should -BeFalse
    }

    It 'keeps an image another VM still uses' {
        $v | Add-VMDisk -VMName kvm2 -Force | Out-Null
        Remove-VMDisk -VMName kvm1 -Target vda -DeleteVolume -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err
        Get-VMDisk kvm1 -Target vda -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Test-Path $v.LocalPath | Should -BeTrue
        $err[0].FullyQualifiedErrorId | Should -BeLike 'VolumeAttachedToVM,*'
    }

    It 'takes disks from Get-VMDisk' {
        Get-VMDisk kvm1 -Target vda | Remove-VMDisk -Confirm:$false
        Get-VMDisk kvm1 -Target vda -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }

    It 'reports a VM removed by someone else between two commands, and changes nothing' {
        $disk = Get-VMDisk kvm2 -Target sda
        if ($live) { Invoke-TestVirsh undefine kvm2 | Out-Null } else { Remove-Item (Join-Path $root 'etc/libvirt/qemu/kvm2.xml') }
        $before = Get-HostSnapshot $root
        $err = $null
        $disk | Remove-VMDisk -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
        $disk | Set-VMDisk -Eject -ErrorVariable +err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 2
        $err.FullyQualifiedErrorId | Should -BeLike 'VMNotFound,*'
        $err[0].Exception.Message | Should -Match 'kvm2'
        if ($live) { $err[0].Exception.Message | Should -Match 'Domain not found' }   # libvirt's message
        Get-HostSnapshot $root | Should -Be $before
    }

    It 'refuses an unknown disk, VM or volume and changes nothing' {
        $before = Get-HostSnapshot $root
        { Remove-VMDisk -VMName kvm1 -Target vdq -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'DiskNotFound,*'
        { Remove-VMDisk -VMName nope -Target vda -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'VMNotFound,*'
        { New-Volume default other.img 1MB -Format raw | Remove-VMDisk -VMName kvm2 -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'DiskNotFound,*'
    }

    It 'changes nothing with -WhatIf' {
        $before = Get-HostSnapshot $root
        Remove-VMDisk -VMName kvm1 -Target vda -DeleteVolume -WhatIf
        Get-HostSnapshot $root | Should -Be $before
    }
}
