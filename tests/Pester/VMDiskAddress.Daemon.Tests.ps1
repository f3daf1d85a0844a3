#Requires -Version 7.4
# Add-VMDisk's target choice against drive addresses other disks hold, checked by libvirt itself: for each fixture
# (domains libvirtd 9.0 wrote, with explicit drive addresses on scsi, sata, ide, fdc and usb, kept with the core
# tests in tests/KvmStorage.Core.Tests/Domains/Fixtures) and each bus its machine type has, Add-VMDisk runs offline
# on a scratch host root holding the fixture, then the file is defined with virsh on a private libvirtd
# (LibvirtDaemon.psm1), which must accept it. The file must differ from the fixture only by the new <disk> and a
# SCSI controller the disk needs. Tagged Daemon; skipped with the reason when not root or packages are missing.

BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot 'LibvirtDaemon.psm1') -Force
    $script:skipReason = Get-TestLibvirtdSkipReason -NeedEmulator

    # Fixture, bus, the target expected and, when libvirt needs one, the drive address written.
    $script:accepted = @(
        @{ Vm = 'scsigap'; Bus = 'virtio'; Target = 'vdb' }
        @{ Vm = 'scsigap'; Bus = 'scsi'; Target = 'sdc' }
        @{ Vm = 'scsigap'; Bus = 'sata'; Target = 'sda' }
        @{ Vm = 'scsigap'; Bus = 'ide'; Target = 'hdd' }
        @{ Vm = 'scsigap'; Bus = 'usb'; Target = 'sda' }
        @{ Vm = 'scsigap'; Bus = 'fdc'; Target = 'fdb'; Address = "controller='0' bus='0' target='0' unit='0'" }
        @{ Vm = 'scsitwo'; Bus = 'virtio'; Target = 'vdb' }
        @{ Vm = 'scsitwo'; Bus = 'scsi'; Target = 'sdi' }
        @{ Vm = 'scsitwo'; Bus = 'sata'; Target = 'sdh' }
        @{ Vm = 'scsitwo'; Bus = 'ide'; Target = 'hda' }
        @{ Vm = 'q35sata'; Bus = 'virtio'; Target = 'vdb' }
        @{ Vm = 'q35sata'; Bus = 'scsi'; Target = 'sda' }
        @{ Vm = 'q35sata'; Bus = 'sata'; Target = 'sde' }
        @{ Vm = 'q35sata'; Bus = 'usb'; Target = 'sda' }
        @{ Vm = 'idemixed'; Bus = 'virtio'; Target = 'vdb' }
        @{ Vm = 'idemixed'; Bus = 'scsi'; Target = 'sda' }
        @{ Vm = 'idemixed'; Bus = 'sata'; Target = 'sda' }
        @{ Vm = 'idemixed'; Bus = 'ide'; Target = 'hdd'; Address = "controller='0' bus='1' target='0' unit='0'" }
        @{ Vm = 'idemixed'; Bus = 'usb'; Target = 'sda' }
    )

    # What Add-VMDisk refuses, with the disk libvirt would have been given and libvirt's own refusal of it.
    $script:refused = @(
        @{ Vm = 'scsigap'; Bus = 'scsi'; Target = 'sda'; Id = 'DriveAddressInUse'; Libvirt = 'duplicate drive address' }
        @{ Vm = 'scsigap'; Bus = 'ide'; Target = 'hdb'; Id = 'DriveAddressInUse'; Libvirt = 'duplicate drive address' }
        @{ Vm = 'q35sata'; Bus = 'sata'; Target = 'sda'; Id = 'DriveAddressInUse'; Libvirt = 'duplicate drive address' }
        @{ Vm = 'scsitwo'; Bus = 'scsi'; Target = 'sdh'; Id = 'DriveAddressInUse'; Libvirt = 'duplicate drive address' }
        @{ Vm = 'scsitwo'; Bus = 'usb'; Target = 'sdh'; Id = 'UsbPortsExhausted'; Libvirt = 'No free USB ports' }
        @{ Vm = 'idefull'; Bus = 'ide'; Target = 'hde'; Id = 'IdeUnitsExhausted'; Libvirt = 'Only 1 IDE controller' }
    )
}

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Join-Path $PSScriptRoot 'LibvirtDaemon.psm1') -Force
    $script:fixtures = Join-Path $PSScriptRoot '../KvmStorage.Core.Tests/Domains/Fixtures'
    $script:daemon = $null
    if (-not (Get-TestLibvirtdSkipReason -NeedEmulator)) {
        # Its own root: the scratch roots Add-VMDisk writes offline have no daemon.
        $script:daemon = Start-TestLibvirtd -Root (Join-Path $TestDrive 'daemon')
    }

    function New-FixtureRoot([string] $Vm) {
        $root = New-TestHostRoot -Name $Vm
        $qemu = Join-Path $root 'etc/libvirt/qemu'
        New-Item -ItemType Directory -Force $qemu | Out-Null
        Copy-Item (Join-Path $fixtures "$Vm.xml") (Join-Path $qemu "$Vm.xml")
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
        $root
    }

    # Defines the file on the private daemon, then removes the domain again; returns virsh's output and exit code.
    function Test-VirshDefine([string] $File, [string] $Vm) {
        $out = & virsh -c $daemon.Uri define $File 2>&1
        $rc = $LASTEXITCODE
        $xml = if ($rc -eq 0) { (& virsh -c $daemon.Uri dumpxml --inactive $Vm 2>&1) -join "`n" }
        if ($rc -eq 0) { & virsh -c $daemon.Uri undefine $Vm *> $null }
        [pscustomobject]@{ ExitCode = $rc; Output = "$out"; Xml = $xml }
    }

    # The lines of the file after the change, without the new disk's element and the SCSI controllers added.
    function Remove-AddedLines([string] $Before, [string] $After, [string] $Target) {
        $lines = [Collections.Generic.List[string]]::new([string[]]($After -split "`n"))
        $at = $lines.FindIndex([Predicate[string]] { param($l) $l -match "<target dev='$Target'" })
        $start = $at; while ($lines[$start] -notmatch '^    <disk ') { $start-- }
        $end = $at; while ($lines[$end] -ne '    </disk>') { $end++ }
        $lines.RemoveRange($start, $end - $start + 1)
        $beforeLines = $Before -split "`n"
        @($lines | Where-Object { -not ($_ -match "^    <controller type='scsi' index='\d+' model='virtio-scsi'/>$" -and $_ -notin $beforeLines) })
    }
}

AfterAll {
    if ($daemon) { Stop-TestLibvirtd $daemon }
}

Describe 'Add-VMDisk targets that libvirt accepts' -Tag Daemon -Skip:([bool]$skipReason) {
    It '<Vm> on <Bus>: <Target>, and virsh define accepts the file' -ForEach $accepted {
        $root = New-FixtureRoot $Vm
        $file = Join-Path $root "etc/libvirt/qemu/$Vm.xml"
        $before = Get-Content -Raw $file
        $disk = if ($Bus -eq 'fdc') { Add-VMDisk -VMName $Vm -Device floppy -NoMedia }
        else { New-Volume -Pool default -Name "new-$Bus.img" -Size 1MB -Format raw | Add-VMDisk -VMName $Vm -Bus $Bus }
        $disk.Target | Should -Be $Target
        $after = Get-Content -Raw $file

        Remove-AddedLines $before $after $Target | Should -Be ($before -split "`n")
        $written = [xml]($after -replace '(?s)^<!--.*?-->\s*', '')
        $new = $written.domain.devices.disk | Where-Object { $_.target.dev -eq $Target }
        if ($Address) { $new.OuterXml | Should -Match ([regex]::Escape("<address type=`"drive`" " + ($Address -replace "'", '"'))) }
        else { $new.address | Should -BeNullOrEmpty }

        $define = Test-VirshDefine $file $Vm
        $define.ExitCode | Should -Be 0 -Because $define.Output
        $define.Xml | Should -Match "<target dev='$Target' bus='$Bus'/>"
    }
}

Describe 'Add-VMDisk refusals that libvirt shares' -Tag Daemon -Skip:([bool]$skipReason) {
    It '<Vm> on <Bus> as <Target>: <Id>; libvirt refuses that disk too' -ForEach $refused {
        $root = New-FixtureRoot $Vm
        $file = Join-Path $root "etc/libvirt/qemu/$Vm.xml"
        $before = Get-Content -Raw $file
        $vol = New-Volume -Pool default -Name refused.img -Size 1MB -Format raw
        $requested = if ($Id -eq 'DriveAddressInUse') { @{ Target = $Target } } else { @{} }
        { $vol | Add-VMDisk -VMName $Vm -Bus $Bus @requested -ErrorAction Stop } | Should -Throw -ErrorId "$Id,*"
        Get-Content -Raw $file | Should -BeExactly $before

        # The disk as it would have been written, defined on libvirtd: the same refusal.
        $bad = $before -replace '(?m)^  </devices>', "    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/var/lib/libvirt/images/refused.img'/><target dev='$Target' bus='$Bus'/></disk>`n  </devices>"
        $badFile = Join-Path $TestDrive "$Vm-$Bus-$Target.xml"
        [IO.File]::WriteAllText($badFile, $bad)
        $define = Test-VirshDefine $badFile $Vm
        $define.ExitCode | Should -Not -Be 0
        $define.Output | Should -Match $Libvirt
    }
}
