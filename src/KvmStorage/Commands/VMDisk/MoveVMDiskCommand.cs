using System.Management.Automation;
using KvmStorage.Core.Domains;
using KvmStorage.Core.Domains.Jobs;
using KvmStorage.Core.Images;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VMDisk;

/// <summary>
/// Move-VMDisk: moves a VM's disk image to another pool. A running VM keeps running: libvirt copies the disk while the
/// guest writes (block copy) and switches to the copy (pivot). A shut-off VM's image is copied and its definition
/// edited. The persistent definition follows either way; the old image is deleted only with -RemoveSource, and any
/// failure or Ctrl+C leaves the VM on its old image.
/// </summary>
[Cmdlet(VerbsCommon.Move, "VMDisk", SupportsShouldProcess = true)]
[OutputType(typeof(Core.Domains.VMDisk))]
public sealed class MoveVMDiskCommand : KvmCmdlet
{
    /// <summary>The VM.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(VMNameCompleter))]
    public string VMName { get; set; } = string.Empty;

    /// <summary>The disk to move (vda, sdb, …).</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DiskTargetCompleter))]
    public string Target { get; set; } = string.Empty;

    /// <summary>The pool (a local folder pool) the disk moves to.</summary>
    [Parameter(Mandatory = true)]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public PoolReference Pool { get; set; } = null!;

    /// <summary>The file name in the new pool; default the image's own (with the new format's extension).</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Name { get; set; }

    /// <summary>The format of the moved image: qcow2 or raw; default raw for raw images, else qcow2 (a chain is flattened).</summary>
    [Parameter]
    [ValidateSet("qcow2", "raw")]
    public string? Format { get; set; }

    /// <summary>Delete the old image once the VM uses the new one.</summary>
    [Parameter]
    public SwitchParameter RemoveSource { get; set; }

    protected override void ProcessRecord()
    {
        RunForItem(VMName, () =>
        {
            var jobs = new VMDiskJobs(KvmHost);
            DiskMovePlan plan = jobs.PlanMove(VMName, Target, Pool.Name, Name, ConvertParameters.ParseFormat(Format), RemoveSource);
            if (ShouldProcess($"{VMName}:{Target}", plan.Description, RemoveSource ? ConfirmImpact.High : ConfirmImpact.Medium))
            {
                RunWithProgress("Move-VMDisk", $"Moving {VMName}:{Target} to {Pool.Name}", (progress, token) => jobs.Move(plan, progress, token));
                WriteObject(new DiskAttachments(KvmHost).GetDisks(VMName).First(d => d.Target == Target));
            }
        });
    }
}
