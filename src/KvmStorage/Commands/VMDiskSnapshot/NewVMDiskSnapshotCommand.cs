using System.Management.Automation;
using KvmStorage.Core.Domains.Jobs;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VMDiskSnapshot;

/// <summary>
/// New-VMDiskSnapshot: a disk-only external snapshot: each disk continues on a new qcow2 overlay of its image (IMAGE-NAME.qcow2
/// beside it), which freezes the image below for a backup or an upgrade. A running VM keeps running (libvirt's disk-only
/// snapshot, atomic across disks); a shut-off VM's definition is edited. Merge-Volume folds the overlay back, live too.
/// </summary>
[Cmdlet(VerbsCommon.New, "VMDiskSnapshot", SupportsShouldProcess = true)]
[OutputType(typeof(StorageVolume))]
public sealed class NewVMDiskSnapshotCommand : KvmCmdlet
{
    /// <summary>The VM.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(VMNameCompleter))]
    public string VMName { get; set; } = string.Empty;

    /// <summary>The snapshot's name: each new overlay is IMAGE-NAME.qcow2 beside the image.</summary>
    [Parameter(Mandatory = true, Position = 1)]
    [ValidatePattern("^[A-Za-z0-9][A-Za-z0-9._+-]*$")]
    public string Name { get; set; } = string.Empty;

    /// <summary>The disks (vda, …); by default every writable disk with an image file.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DiskTargetCompleter))]
    public string[]? Target { get; set; }

    protected override void ProcessRecord()
    {
        RunForItem(VMName, () =>
        {
            var jobs = new VMDiskJobs(KvmHost);
            DiskSnapshotPlan plan = jobs.PlanSnapshot(VMName, Target, Name);
            if (ShouldProcess(VMName, plan.Description))
            {
                WriteObject(jobs.Snapshot(plan), enumerateCollection: true);
            }
        });
    }
}
