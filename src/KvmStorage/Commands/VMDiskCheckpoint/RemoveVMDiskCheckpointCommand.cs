using System.Management.Automation;
using KvmStorage.Core.Domains.Jobs;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VMDiskCheckpoint;

/// <summary>
/// Remove-VMDiskCheckpoint: deletes libvirt checkpoints of a VM (their dirty bitmaps merge into the checkpoint before,
/// so later incremental backups stay whole); backup files are untouched. Needs libvirtd.
/// </summary>
[Cmdlet(VerbsCommon.Remove, "VMDiskCheckpoint", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(void))]
public sealed class RemoveVMDiskCheckpointCommand : KvmCmdlet
{
    /// <summary>The VM.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(VMNameCompleter))]
    public string VMName { get; set; } = string.Empty;

    /// <summary>The checkpoints to delete; binds Get-VMDiskCheckpoint's objects from the pipeline.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string[] Name { get; set; } = [];

    protected override void ProcessRecord()
    {
        var jobs = new VMDiskJobs(KvmHost);
        foreach (string name in Name)
        {
            RunForItem(name, () =>
            {
                if (ShouldProcess($"{VMName}", $"Delete checkpoint '{name}' (its bitmaps merge into the one before)"))
                {
                    jobs.RemoveCheckpoint(VMName, name);
                }
            });
        }
    }
}
