@{
    RootModule             = 'KvmStorage.dll'
    # Stamped from src/Directory.Build.props (KvmStorageVersion) by build.ps1; edit the version there.
    ModuleVersion          = '0.0.0'
    GUID                   = '5b0f4d8e-3c1e-4f38-9a55-7f0c2d6a9e41'
    Author                 = 'KvmStorage contributors'
    CompanyName            = 'KvmStorage'
    Copyright              = '(c) KvmStorage contributors. MIT License.'
    Description            = 'Manage libvirt storage pools, qcow2/raw/vmdk disk images and VM disks on KVM hosts, offline or through libvirt.'
    PowerShellVersion      = '7.4'
    CompatiblePSEditions   = @('Core')
    FormatsToProcess       = @('KvmStorage.Format.ps1xml')
    CmdletsToExport        = @(
        'Get-StoragePool'
        'New-StoragePool'
        'Set-StoragePool'
        'Remove-StoragePool'
        'Start-StoragePool'
        'Stop-StoragePool'
        'Update-StoragePool'
        'Get-Volume'
        'New-Volume'
        'Remove-Volume'
        'Resize-Volume'
        'Set-Volume'
        'Merge-Volume'
        'Measure-Volume'
        'Get-VolumeMap'
        'Get-VMDisk'
        'Add-VMDisk'
        'Set-VMDisk'
        'Remove-VMDisk'
        'Test-Volume'
        'Compare-Volume'
        'Optimize-Volume'
        'Convert-Volume'
        'Copy-Volume'
        'Import-Volume'
        'Export-Volume'
        'Get-VolumeSnapshot'
        'New-VolumeSecret'
        'Get-VolumeSecret'
        'Remove-VolumeSecret'
        'Backup-VMDisk'
        'Move-VMDisk'
        'Get-VMDiskCheckpoint'
        'Remove-VMDiskCheckpoint'
        'New-VMDiskSnapshot'
        'New-VolumeSnapshot'
        'Restore-VolumeSnapshot'
        'Remove-VolumeSnapshot'
        'Connect-LibvirtHost'
        'Get-LibvirtHost'
        'Disconnect-LibvirtHost'
    )
    FunctionsToExport      = @()
    VariablesToExport      = @()
    AliasesToExport        = @()
    PrivateData            = @{
        PSData = @{
            Tags       = @('KVM', 'libvirt', 'qcow2', 'storage', 'Linux', 'virtualization')
            LicenseUri = 'https://opensource.org/licenses/MIT'
            ReleaseNotes = '0.1.0: pools (offline files or libvirt), volumes (qcow2, raw, vmdk; convert, copy, import, export, rebase, merge, snapshots, check, compare, optimize) and VM disks, with one way to name a volume on every volume command. See README.md and about_KvmStorage.'
        }
    }
}
